"""w2v-BERT pretraining (both objectives), sharding, the trainer, and the semantic tokenizer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.models.w2v_bert import pretrain as sp
from audiolm_jax.quantization.minibatch_kmeans import KMeansModel
from audiolm_jax.tokenizers.semantic import (
    SemanticTokenizer,
    deduplicate,
    fit_semantic_kmeans,
    load_semantic_encoder,
)
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.loop import jit_train_step
from audiolm_jax.training.optimizers import make_optimizer
from configs.w2v_bert import tiny


def micro_config(objective="w2v_bert", steps=4):
    c = tiny.get_config()
    c.model.encoder.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, conv_depthwise_kernel_size=5,
                           left_max_position_embeddings=8, right_max_position_embeddings=4)
    c.model.pretrain.update(objective=objective, contrastive_layers=1, codebook_size=32,
                            codevector_dim=16, proj_dim=16, num_negatives=5,
                            mask_start_prob=0.2, mask_span=3)
    c.data.update(crop_seconds=0.5, batch_size=8, num_threads=1, eval_fraction=0.2)
    c.optimizer.update(lr=3e-3, warmup_steps=0, schedule="constant")
    c.train.update(num_steps=steps, log_every=1, save_every=2, eval_every=steps,
                   progress=False, async_checkpoints=False)
    return c


def speech_like_batch(batch=8, samples=8_000):
    """Voiced syllables: harmonics under a moving formant, noise bursts between."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / 16_000
    rows = []
    for i in range(batch):
        f0 = 110 + 15 * i
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        envelope = np.maximum(0, np.sin(2 * np.pi * (3 + 0.3 * i) * t))
        rows.append(0.2 * voiced * envelope + 0.02 * rng.standard_normal(samples) * (1 - envelope))
    audio = np.stack(rows).astype(np.float32)[..., None]
    mask = np.ones((batch, samples), bool)
    mask[0, 6_000:] = False
    return {"audio": audio, "mask": mask}


def run_steps(config, mesh_shape, rules, devices, steps):
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules(rules)
    model = sp.build_model(config)
    init_fn = sp.make_init_fn(model, make_optimizer(config.optimizer))
    state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    step = jit_train_step(sp.make_train_step(model), shardings, mesh)
    data = mesh_lib.make_global_batch(speech_like_batch(), mesh)
    history = []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(steps):
            state, metrics = step(state, data, jax.random.key(1))
            history.append(jax.device_get(metrics))
    return state, history


def test_best_rq_targets_are_fixed_and_in_range():
    config = sp.PretrainConfig(objective="best_rq", codebook_size=64)
    x = jax.random.normal(jax.random.key(0), (2, 50, 160))
    ids = sp.best_rq_targets(x, config)
    assert ids.shape == (2, 50) and ids.dtype == jnp.int32
    assert 0 <= int(ids.min()) and int(ids.max()) < 64
    np.testing.assert_array_equal(ids, sp.best_rq_targets(x, config))
    other = sp.best_rq_targets(x, sp.PretrainConfig(objective="best_rq", codebook_size=64,
                                                    best_rq_seed=1))
    assert (np.asarray(other) != np.asarray(ids)).mean() > 0.5


def test_negatives_are_other_valid_frames_of_the_same_row():
    valid = jnp.asarray(np.arange(20)[None] < np.array([[20], [7]]))
    index = np.asarray(sp.sample_negatives(jax.random.key(0), valid, 50))
    own = np.arange(20)[None, :, None]
    assert (index != own).all()
    assert index[0].max() <= 19 and index[1].max() <= 6 and index.min() >= 0


def test_contrastive_loss_rewards_the_true_target():
    rng = np.random.default_rng(0)
    quantized = jnp.asarray(rng.standard_normal((1, 12, 8)), jnp.float32)
    ids = jnp.arange(12)[None]
    scored = jnp.ones((1, 12))
    negatives = sp.sample_negatives(jax.random.key(0), jnp.ones((1, 12), bool), 4)
    good, acc = sp.contrastive_loss(quantized, quantized, ids, scored, negatives, 0.1)
    bad, _ = sp.contrastive_loss(-quantized, quantized, ids, scored, negatives, 0.1)
    assert float(acc) == 1.0 and float(good) < 0.1 < float(bad)


def test_masks_cover_about_the_configured_share():
    config = sp.PretrainConfig(mask_start_prob=0.065, mask_span=10)
    valid = jnp.ones((64, 200), bool).at[0, 100:].set(False)
    hidden = np.asarray(sp.make_hidden_mask(jax.random.key(0), valid, config))
    assert 0.4 < hidden.mean() < 0.6
    assert not hidden[0, 100:].any()
    with pytest.raises(ValueError, match="objective"):
        sp.PretrainConfig(objective="hubert")


@pytest.mark.parametrize("objective", ["w2v_bert", "best_rq"])
def test_pretraining_loss_drops_on_a_fixed_batch(objective):
    _, history = run_steps(micro_config(objective), (1, 1, 1), "dp", jax.devices()[:1], 100)
    first = np.mean([h["loss"] for h in history[:5]])
    last = np.mean([h["loss"] for h in history[-5:]])
    assert np.isfinite([h["loss"] for h in history]).all()
    assert last < 0.9 * first, (first, last)
    assert history[-1]["mlm_accuracy"] > history[0]["mlm_accuracy"]
    if objective == "w2v_bert":
        assert history[-1]["contrastive_accuracy"] > history[0]["contrastive_accuracy"]


@pytest.fixture(scope="module")
def single_device_history():
    """Two w2v-BERT steps on one device: the reference of every mesh case."""
    return run_steps(micro_config("w2v_bert"), (1, 1, 1), "dp", jax.devices()[:1], 2)[1]


@pytest.mark.parametrize("shape,rules", [((8, 1, 1), "dp"), ((1, 8, 1), "fsdp")])
def test_pretraining_step_is_the_same_on_8_devices(single_device_history, shape, rules):
    assert len(jax.devices()) == 8
    config = micro_config("w2v_bert")
    reference = single_device_history
    _, history = run_steps(config, shape, rules, jax.devices(), 2)
    for ours, theirs in zip(history, reference):
        for key in ("loss", "mlm_loss", "contrastive_loss", "diversity_loss"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=2e-4, atol=1e-5,
                                       err_msg=key)


def test_trainer_writes_export_and_resumes(tmp_path, audio_folder):
    from train.w2v_bert import train_and_evaluate

    config = micro_config("best_rq", steps=4)
    config.data.update(source="folder", folder=str(audio_folder))
    workdir = tmp_path / "run"
    result = train_and_evaluate(config, workdir)
    assert result.last_step == 4
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/mlm_loss" in r for r in rows)
    assert (workdir / "plots" / "losses.png").exists()
    encoder = load_semantic_encoder(workdir / "export")
    assert encoder.name == "w2v_bert 2x32" and encoder.frame_rate == 50
    config.train.num_steps = 6
    resumed = train_and_evaluate(config, workdir)
    assert resumed.start_step == 4 and resumed.last_step == 6


@pytest.fixture(scope="module")
def encoder_export(tmp_path_factory):
    """A randomly initialized micro encoder, exported as train/w2v_bert.py exports it."""
    from train.w2v_bert import export_encoder

    model = sp.build_model(micro_config())
    state = sp.make_init_fn(model, make_optimizer(micro_config().optimizer))(jax.random.key(0))
    workdir = tmp_path_factory.mktemp("semantic")
    export_encoder(workdir, model, jax.device_get(state.params), 0)
    return workdir / "export"


def test_tokenizer_fits_tokenizes_and_checks_its_inputs(encoder_export, tmp_path):
    encoder = load_semantic_encoder(encoder_export)
    clips = [speech_like_batch(4, 16_000 + 3_000 * i)["audio"][i, :, 0] for i in range(4)]
    kmeans = fit_semantic_kmeans(encoder, 2, clips, num_clusters=8, num_steps=5,
                                 batch_frames=64, progress=False)
    path = kmeans.save(tmp_path / "kmeans.npz")
    tokenizer = SemanticTokenizer.load(encoder_export, path)
    assert tokenizer.layer == 2 and tokenizer.vocab_size == 8
    ids = tokenizer.tokenize(clips[1], 16_000)
    assert ids.shape == (encoder.num_frames(len(clips[1])),) and ids.max() < 8
    # Bucket padding is masked: the same clip alone or padded gives the same states.
    exact = encoder.layer_features(clips[1], [2])[0]
    features = encoder._hidden_states(encoder.variables, np.pad(clips[1], (0, 5_000))[None],
                                      jnp.asarray([len(clips[1])]))[2][0, : len(exact)]
    np.testing.assert_allclose(np.asarray(features), exact, atol=1e-4)
    unique, runs = deduplicate(ids)
    assert runs.sum() == len(ids) and (unique[1:] != unique[:-1]).all()
    np.testing.assert_array_equal(tokenizer.tokenize(clips[1], 16_000, dedup=True), unique)
    stereo = np.stack([clips[1], clips[1]], axis=1)
    np.testing.assert_array_equal(tokenizer.tokenize(stereo, 16_000), ids)

    with pytest.raises(ValueError, match="24000 Hz.*16000 Hz"):
        tokenizer.tokenize(clips[1], 24_000)
    with pytest.raises(ValueError, match="shorter than one frame"):
        tokenizer.tokenize(clips[1][:300], 16_000)
    with pytest.raises(ValueError, match="layer=2.*layer=1"):
        SemanticTokenizer.load(encoder_export, path, layer=1)
    wrong_dim = KMeansModel(np.zeros((8, 12), np.float32), {"layer": 2})
    with pytest.raises(ValueError, match="12-dimensional"):
        SemanticTokenizer(encoder, wrong_dim)
    other = KMeansModel(np.zeros((8, 32), np.float32), {"layer": 2, "encoder": "hubert 12x32"})
    with pytest.raises(ValueError, match="hubert 12x32"):
        SemanticTokenizer(encoder, other)


def test_wrong_family_checkpoints_are_refused(tmp_path):
    from audiolm_jax.training.export import save_exported

    save_exported(tmp_path / "codec", "codec", {"sample_rate": 24_000},
                  {"params": {"w": np.zeros(2)}})
    with pytest.raises(CheckpointMismatchError, match="'codec' model.*speech encoder"):
        load_semantic_encoder(tmp_path / "codec")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointMismatchError, match="model_type 'bert'"):
        load_semantic_encoder(tmp_path / "bert")
    with pytest.raises(FileNotFoundError, match="neither an export"):
        load_semantic_encoder(tmp_path)


def test_infer_cli_writes_token_files(encoder_export, tmp_path):
    from infer.semantic_tokens import main

    folder = tmp_path / "in"
    folder.mkdir()
    batch = speech_like_batch(3, 12_000)["audio"][..., 0]
    for i, clip in enumerate(batch):
        sf.write(folder / f"clip{i}.wav", clip, 16_000 if i else 24_000)
    sf.write(folder / "short.wav", np.zeros(100, np.float32), 16_000)
    out = tmp_path / "out"
    assert main(["--encoder", str(encoder_export), "--input", str(folder), "--output", str(out),
                 "--fit-kmeans", "8", "--layer", "2", "--kmeans-steps", "3"]) == 0
    manifest = [json.loads(line) for line in (out / "tokens.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in manifest) == ["clip0.wav", "clip1.wav", "clip2.wav"]
    tokens = np.load(out / "clip1.wav.npy")
    assert tokens.shape == (37,) and tokens.dtype == np.int32       # 0.75 s at 50 Hz
    assert (out / "kmeans.npz").exists() and (out / "skipped.txt").read_text().startswith(
        "short.wav")
