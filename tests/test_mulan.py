"""MuLan: contrastive loss, towers, global-batch negatives on a mesh, freezing, tokens,
the trainer end to end on the tiny music corpus, and bad input."""

import json
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.eval.retrieval import chance_metrics, retrieval_metrics
from audiolm_jax.losses.contrastive import contrastive_loss
from audiolm_jax.models import mulan as mulan_lib
from audiolm_jax.models.bert.model import BertConfig
from audiolm_jax.quantization.residual_kmeans import ResidualKMeans, fit_residual_kmeans
from audiolm_jax.text.wordpiece import WordPieceTokenizer
from audiolm_jax.tokenizers.mulan import MuLanEmbedder, MuLanTokenizer
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.checkpointing import CheckpointMismatchError
from audiolm_jax.training.loop import jit_train_step
from audiolm_jax.training.optimizers import make_optimizer
from configs.mulan import tiny

CAPTIONS = ["a slow piano melody in A minor at 70 bpm with soft drums",
            "an upbeat organ tune in D major, 128 bpm, busy drums and a deep bass",
            "melancholic theme in E dorian played on flute, moderate at 96 bpm",
            "a fast plucked-string piece in C major at 150 bpm with no drums"]


def micro_config():
    """Tiny towers over 1 s windows: compiles and steps in seconds."""
    c = tiny.get_config()
    c.model.audio.update(n_mels=32, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
                         clip_seconds=1.0)
    c.model.text.update(vocab_size=120, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    c.model.update(tokenizer_vocab_size=120, embed_dim=16, max_text_length=32)
    c.rvq.update(num_quantizers=3, codebook_size=4, steps=5, windows_per_clip=2)
    c.optimizer.update(lr=3e-3, warmup_steps=0)
    c.train.update(num_steps=4, log_every=2, save_every=4, eval_every=2, progress=False)
    c.data.update(batch_size=4, num_threads=1)
    c.mesh.shape.update(data=4, tensor=-1)   # 8 test devices; 6 training clips
    return c


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer.train(CAPTIONS * 3, vocab_size=120)


def make_model(config, freeze_text=False):
    return mulan_lib.MuLan(mulan_lib.build_config(config.model), freeze_text=freeze_text)


def make_batch(config, tokenizer, n=8, seed=0):
    rng = np.random.default_rng(seed)
    samples = int(config.model.audio.clip_seconds * config.model.audio.sample_rate)
    t = np.arange(samples) / config.model.audio.sample_rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t) + 0.01 * rng.standard_normal(
        samples) for i in range(n)]).astype(np.float32)[..., None]
    tokens = tokenizer.encode([f"take {i}: " + CAPTIONS[i % 4] for i in range(n)],
                              config.model.max_text_length)
    return {"audio": audio, "mask": np.ones(audio.shape[:2], bool),
            "text_ids": tokens.ids, "text_mask": tokens.mask.astype(np.int32)}


def run_steps(config, tokenizer, mesh_shape, rules, devices, steps, freeze_text=False):
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules(rules)
    model = make_model(config, freeze_text)
    init_fn = mulan_lib.make_init_fn(model, make_optimizer(config.optimizer), freeze_text)
    state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    step = jit_train_step(mulan_lib.make_train_step(model), shardings, mesh)
    data = mesh_lib.make_global_batch(make_batch(config, tokenizer), mesh)
    history = []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(steps):
            state, metrics = step(state, data, jax.random.key(1))
            history.append(jax.device_get(metrics))
    return state, history


def test_contrastive_loss_matches_a_numpy_reference_and_is_symmetric():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 5))
    b = rng.standard_normal((6, 5))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    logits = 10.0 * a @ b.T

    def ce(x):
        x = x - x.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(x).sum(axis=1)) - np.diag(x))

    loss, metrics = contrastive_loss(jnp.asarray(a), jnp.asarray(b), jnp.float32(10.0))
    np.testing.assert_allclose(float(loss), 0.5 * (ce(logits) + ce(logits.T)), rtol=1e-5)
    swapped, _ = contrastive_loss(jnp.asarray(b), jnp.asarray(a), jnp.float32(10.0))
    np.testing.assert_allclose(float(swapped), float(loss), rtol=1e-6)
    perfect, m = contrastive_loss(jnp.asarray(a), jnp.asarray(a), jnp.float32(100.0))
    assert float(perfect) < 1e-3 and float(m["accuracy_a2b"]) == 1.0


def test_audio_tower_patches_and_masks():
    config = mulan_lib.AudioTowerConfig(n_mels=32, patch_mels=16, patch_frames=16,
                                        hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
                                        clip_seconds=1.0)
    audio = jnp.zeros((2, 16_000))
    mask = jnp.ones((2, 16_000), bool).at[1, 8_000:].set(False)
    patches, valid, bands = mulan_lib.log_mel_patches(audio, mask, config)
    assert bands == 2 and patches.shape == (2, 6 * 2, 256)
    assert bool(valid[0].all()) and int(valid[1].sum()) == 2 * 4   # patches starting < 0.5 s
    with pytest.raises(ValueError, match="n_mels=30 must be a multiple"):
        mulan_lib.AudioTowerConfig(n_mels=30)


@pytest.fixture(scope="module")
def single_device_run(tokenizer):
    return run_steps(micro_config(), tokenizer, (1, 1, 1), "dp", jax.devices()[:1], 2)


@pytest.mark.parametrize("rules", ["dp", "fsdp"])
def test_global_batch_negatives_match_single_device(tokenizer, single_device_run, rules):
    """8 devices holding one example each: the similarity matrix must still be 8 x 8,
    so the loss and the update equal the single-device ones (a per-device matrix
    would be 1 x 1 and give a loss of exactly 0)."""
    config = micro_config()
    single, ref = single_device_run
    shape = (8, 1, 1) if rules == "dp" else (1, 8, 1)
    sharded, out = run_steps(config, tokenizer, shape, rules, jax.devices(), 2)
    assert float(ref[0]["loss"]) > 1.0      # about log(8) at init: 8 candidates per row
    for a, b in zip(ref, out):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-5)
    # Two Adam steps of lr 3e-3 move weights by ~6e-3; summation order across devices
    # moves them by < 1e-5 more.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=3e-5),
                 jax.device_get(single.params), jax.device_get(sharded.params))


def test_loss_drops_on_a_fixed_batch(tokenizer):
    config = micro_config()
    _, history = run_steps(config, tokenizer, (1, 1, 1), "dp", jax.devices()[:1], 40)
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    assert history[-1]["accuracy_a2b"] >= 0.75


def test_residual_kmeans_reduces_error_stage_by_stage_and_checks_metadata(tmp_path):
    x = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    rvq, energy = fit_residual_kmeans(x, 3, 16, steps=20, metadata={"model": "mulan"},
                                      progress=False)
    assert energy[0] > energy[1] > energy[2] and energy[0] < 1.0
    codes = rvq.encode(x)
    assert codes.shape == (600, 3) and codes.dtype == np.int32 and codes.max() < 16
    err = np.sum((x - rvq.decode(codes)) ** 2) / np.sum(x ** 2)
    np.testing.assert_allclose(err, energy[-1], rtol=1e-4)
    path = rvq.save(tmp_path / "rvq.npz")
    assert ResidualKMeans.load(path, expect={"model": "mulan", "dim": 8}).num_quantizers == 3
    with pytest.raises(ValueError, match="model=.bert. was expected"):
        ResidualKMeans.load(path, expect={"model": "bert"})
    with pytest.raises(ValueError, match="cannot seed 1024 codes"):
        fit_residual_kmeans(x, 1, 1024, progress=False)
    with pytest.raises(ValueError, match="dimension 8"):
        rvq.encode(np.zeros((2, 5)))


def test_retrieval_metrics_and_chance():
    relevant = np.eye(20, dtype=bool)
    perfect = retrieval_metrics(np.eye(20), relevant)
    assert perfect["R@1"] == 1.0 and perfect["mAP"] == 1.0 and perfect["median_rank"] == 1
    # Ties count against the relevant item: a constant score ranks it last.
    constant = retrieval_metrics(np.zeros((20, 20)), relevant)
    assert constant["R@10"] == 0.0 and constant["median_rank"] == 20
    chance = chance_metrics(relevant, trials=300)
    np.testing.assert_allclose(chance["R@1"], 1 / 20, atol=0.01)
    np.testing.assert_allclose(chance["R@10"], 10 / 20, atol=0.03)
    # Two relevant items at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
    sim = np.array([[0.9, 0.5, 0.7, 0.1]])
    rel = np.array([[True, False, True, False]])
    sim[0, 2] = 0.4
    np.testing.assert_allclose(retrieval_metrics(sim, rel)["mAP"], (1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="no relevant"):
        retrieval_metrics(np.zeros((2, 3)), np.zeros((2, 3), bool))


def brute_force_retrieval(similarity):
    """R@1, mAP and median rank with one relevant item per query (the diagonal),
    counting every tie against it: rank = 1 + #{j != i: s[i, j] >= s[i, i]}."""
    s = np.asarray(similarity, np.float64)
    own = np.diag(s)[:, None]
    ranks = 1 + np.sum((s >= own) & ~np.eye(len(s), dtype=bool), axis=1)
    return {"R@1": float(np.mean(ranks == 1)), "mAP": float(np.mean(1.0 / ranks)),
            "median_rank": float(np.median(ranks))}


def test_retrieval_of_constructed_embeddings_has_the_known_answer():
    """Captions e_i; clip j = (e_j + 2 e_sigma(j)) / sqrt(5), sigma a 5-cycle on 0..4 fixing
    5..7. Caption i then scores 2/sqrt(5) on clip sigma^-1(i), 1/sqrt(5) on its own, 0
    elsewhere: its clip ranks 2nd for i < 5 and 1st (clip = e_i) for i >= 5."""
    n, sigma = 8, np.array([1, 2, 3, 4, 0, 5, 6, 7])
    text = np.eye(n)
    audio = np.eye(n) + 2 * np.eye(n)[sigma] * (sigma != np.arange(n))[:, None]
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    similarity = text @ audio.T
    expected = {"R@1": 3 / 8, "R@5": 1.0, "R@10": 1.0, "mAP": (3 + 5 / 2) / 8, "median_rank": 2.0}
    for sim in (similarity, similarity.T):      # text -> music and music -> text
        got = retrieval_metrics(sim, np.eye(n, dtype=bool))
        assert got == pytest.approx(expected, abs=1e-12)
        assert {k: got[k] for k in ("R@1", "mAP", "median_rank")} == pytest.approx(
            brute_force_retrieval(sim), abs=1e-12)
    # The identity pairing retrieves everything first; a pure derangement nothing.
    assert retrieval_metrics(text @ text.T, np.eye(n, dtype=bool))["R@1"] == 1.0
    shifted = retrieval_metrics(text @ text[np.roll(np.arange(n), 1)].T, np.eye(n, dtype=bool))
    assert shifted["R@1"] == 0.0 and shifted["R@5"] == 0.0 and shifted["median_rank"] == n
    # Random scores: retrieval_metrics agrees with the brute force.
    sim = np.random.default_rng(3).standard_normal((9, 9))
    got = retrieval_metrics(sim, np.eye(9, dtype=bool))
    assert {k: got[k] for k in ("R@1", "mAP", "median_rank")} == pytest.approx(
        brute_force_retrieval(sim), abs=1e-12)


def test_trainer_retrieval_reads_captions_as_queries():
    """train/mulan.py's evaluation on a similarity with a known, asymmetric answer:
    captions are rows (text -> music), clips columns (music -> text)."""
    from train.mulan import evaluate_retrieval

    similarity = np.array([[0.9, 0.1, 0.0],     # caption 0: own clip first
                           [0.8, 0.5, 0.0],     # caption 1: clip 0 beats its own
                           [0.0, 0.0, 0.7]])    # every clip's own caption is first

    class Embedder:                              # clip i -> e_i, caption i -> row i
        sample_rate = 16_000

        def embed_audio(self, clip, sample_rate):
            assert sample_rate == self.sample_rate
            return np.eye(3)[int(clip[0])]

        def embed_text(self, captions):
            return similarity[[int(c.split()[-1]) for c in captions]]

    clips = [np.full(16_000, i, np.float32) for i in range(3)]
    out = evaluate_retrieval(Embedder(), clips, [f"caption {i}" for i in range(3)])
    assert out["text2music_R@1"] == pytest.approx(2 / 3)
    assert out["text2music_mAP"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert out["text2music_median_rank"] == 1.0
    assert out["music2text_R@1"] == 1.0 and out["music2text_mAP"] == 1.0


@pytest.fixture(scope="module")
def music_corpus(tmp_path_factory):
    from audiolm_jax.data.corpora.music import build_music_corpus

    return build_music_corpus("tiny", root=tmp_path_factory.mktemp("corpora"), progress=False)


@pytest.fixture(scope="module")
def trained(music_corpus, tmp_path_factory):
    from train.mulan import train_and_evaluate

    config = micro_config()
    config.data.update(corpus_size="tiny", corpus_root=str(music_corpus.parent))
    workdir = tmp_path_factory.mktemp("mulan") / "run"
    result = train_and_evaluate(config, workdir)
    return config, workdir, result


def test_trainer_exports_tokens_and_resumes(trained):
    from train.mulan import train_and_evaluate

    config, workdir, result = trained
    assert result.last_step == 4
    report = json.loads((workdir / "retrieval.json").read_text())
    assert report["held_out_clips"] == 2 and report["step"] == 4
    # The report is the exported model's retrieval on the held-out split, recomputed
    # here by brute force (text -> music is rows = captions, music -> text the transpose).
    from audiolm_jax.data.builder import source_from_config
    from audiolm_jax.data.pipeline import BadFileReport
    from audiolm_jax.data.sources import split_holdout_groups
    from train.mulan import captions_of, load_clips

    _, held = split_holdout_groups(source_from_config(config.data, progress=False),
                                   config.data.group_field, config.data.eval_fraction,
                                   seed=config.data.seed)
    embedder = MuLanEmbedder.load(workdir / "export")
    clips = load_clips(held, embedder.sample_rate, BadFileReport())
    audio = np.stack([embedder.embed_audio(c, embedder.sample_rate) for c in clips])
    similarity = embedder.embed_text(captions_of(held)) @ audio.T
    for name, sim in (("text2music", similarity), ("music2text", similarity.T)):
        for key, value in brute_force_retrieval(sim).items():
            assert report[f"{name}_{key}"] == pytest.approx(value, abs=1e-9), (name, key)
    assert len(report["tokens"]["residual_energy"]) == 3
    assert (workdir / "plots" / "losses.png").exists() and (workdir / "tokenizer.json").exists()
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/music2text_mAP" in r for r in rows)

    tokens = MuLanTokenizer.load(workdir / "export")
    assert tokens.text_tokens(CAPTIONS[:2]).shape == (2, 3)
    clip = np.random.default_rng(0).standard_normal(36_000).astype(np.float32) * 0.1
    assert tokens.audio_tokens(clip, 24_000).shape == (3,)
    assert tokens.audio_tokens(clip, 24_000, per_window=True).shape == (2, 3)

    config.train.num_steps = 6
    resumed = train_and_evaluate(config, workdir)
    assert resumed.start_step == 4 and resumed.last_step == 6


def test_embedder_ranks_and_refuses_bad_input(trained, caplog):
    _, workdir, _ = trained
    mulan = MuLanEmbedder.load(workdir / "export")
    clips = np.random.default_rng(1).standard_normal((3, 16_000)).astype(np.float32) * 0.1
    embeddings = np.stack([mulan.embed_audio(c, 16_000) for c in clips])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    query = mulan.embed_text([CAPTIONS[0]])[0]
    order, scores = mulan.rank(CAPTIONS[0], embeddings)
    raw = embeddings @ query
    np.testing.assert_array_equal(order, np.argsort(-raw, kind="stable"))
    np.testing.assert_allclose(scores, raw[order], rtol=1e-6)
    # Clips with known cosines to the query: c * q + sqrt(1 - c^2) * (unit vector _|_ q).
    cosines = np.array([0.1, 0.9, -0.5, 0.4])
    others = np.linalg.qr(np.column_stack([query, np.random.default_rng(2).standard_normal(
        (query.size, 4))]))[0][:, 1:].T                 # 4 orthonormal directions _|_ query
    built = cosines[:, None] * query + np.sqrt(1 - cosines[:, None] ** 2) * others
    order, scores = mulan.rank(CAPTIONS[0], built)
    assert order.tolist() == [1, 3, 0, 2]
    np.testing.assert_allclose(scores, [0.9, 0.4, 0.1, -0.5], atol=1e-5)

    with pytest.raises(ValueError, match="empty"):
        mulan.embed_text(["fine", "  "])
    with caplog.at_level(logging.WARNING):
        long = mulan.embed_text([" ".join(["piano"] * 100)])
    assert long.shape == (1, 16) and "truncated" in caplog.text
    with pytest.raises(ValueError, match="shorter than the model's 1 s window"):
        mulan.embed_audio(np.zeros(8_000, np.float32) + 0.1, 16_000)

    bigger = WordPieceTokenizer.train(CAPTIONS * 3 + [f"word{i} " * 3 for i in range(400)],
                                      vocab_size=600)
    with pytest.raises(CheckpointMismatchError, match="vocab"):
        MuLanEmbedder(mulan.config, mulan.params, bigger)


def test_infer_cli_embeds_ranks_and_skips(trained, tmp_path, capsys):
    import soundfile as sf

    from infer.mulan import main

    _, workdir, _ = trained
    clips = tmp_path / "clips"
    clips.mkdir()
    t = np.arange(24_000 * 2) / 24_000
    for i, f in enumerate((220.0, 440.0)):
        sf.write(clips / f"tone{i}.wav", 0.3 * np.sin(2 * np.pi * f * t), 24_000)
    sf.write(clips / "short.wav", 0.3 * np.sin(2 * np.pi * 330 * t[:6000]), 24_000)
    (tmp_path / "captions.txt").write_text(CAPTIONS[0] + "\n\n" + CAPTIONS[1] + "\n")
    out = tmp_path / "out"
    assert main(["--model", str(workdir / "export"), "--audio", str(clips), "--captions",
                 str(tmp_path / "captions.txt"), "--output", str(out), "--query",
                 "a slow piano melody", "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 clips" in printed and "1 skipped" in printed and "tone" in printed
    audio = np.load(out / "audio.npz")
    assert audio["embeddings"].shape == (2, 16) and audio["tokens"].shape == (2, 3)
    assert np.load(out / "text.npz")["embeddings"].shape == (2, 16)
    assert "shorter than the model's 1 s window" in (out / "skipped.txt").read_text()
    assert main(["--model", str(workdir / "export"), "--output", str(out)]) == 1


def test_text_tower_starts_from_an_imported_bert_and_stays_frozen(music_corpus, tmp_path,
                                                                 tokenizer):
    from audiolm_jax.convert.bert import init_variables, load_bert
    from audiolm_jax.training.export import save_exported
    from train.mulan import train_and_evaluate

    bert_config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                             num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=32)
    bert_dir = tmp_path / "bert"
    save_exported(bert_dir, "bert", bert_config.to_dict(), init_variables(bert_config, seed=3))
    tokenizer.save(bert_dir / "tokenizer.json")
    imported_config, imported, _ = load_bert(bert_dir)

    config = micro_config()
    config.data.update(corpus_size="tiny", corpus_root=str(music_corpus.parent))
    config.model.update(text_init=str(bert_dir), freeze_text=True)
    config.train.update(num_steps=2, eval_every=0)
    result = train_and_evaluate(config, tmp_path / "run")
    final = jax.device_get(result.state.params)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(imported["params"]),
                 final["text_tower"])
    # The trainer's fresh state (the loop's init key), before the import replaced the tower.
    model = mulan_lib.MuLan(mulan_lib.build_config(config.model, imported_config))
    init_rng = jax.random.split(jax.random.key(config.train.seed))[0]
    start = jax.device_get(nn.unbox(mulan_lib.make_init_fn(
        model, make_optimizer(config.optimizer))(init_rng).params))
    assert not np.allclose(start["text_projection"]["kernel"],
                           final["text_projection"]["kernel"])
    assert not (tmp_path / "run" / "tokenizer.json").exists()   # the import's tokenizer is used


def test_sharded_step_gathers_only_embeddings(tokenizer):
    """Global negatives need the [N, E] embeddings of every device, nothing more: the
    front end must stay batch-sharded (an FFT would all-gather every device's frames)."""
    import re

    from audiolm_jax.audio.spectral import stft

    x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    np.testing.assert_allclose(stft(x, 400, 160, dft="matmul"), stft(x, 400, 160), atol=1e-4)

    config = micro_config()
    mesh = mesh_lib.create_mesh((8, 1, 1))
    rules = mesh_lib.get_rules("dp")
    model = make_model(config)
    init_fn = mulan_lib.make_init_fn(model, make_optimizer(config.optimizer))
    abstract, shardings = state_lib.abstract_state(init_fn, mesh, rules, jax.random.key(0))
    step = jit_train_step(mulan_lib.make_train_step(model), shardings, mesh)
    data = mesh_lib.make_global_batch(make_batch(config, tokenizer), mesh)
    with mesh_lib.sharding_context(mesh, rules):
        hlo = step.lower(abstract, data, jax.random.key(1)).compile().as_text()
    gathered = re.findall(r"= f32\[([0-9,]+)\]\S* all-gather", hlo)
    assert gathered, "expected the embeddings to be all-gathered"
    for dims in gathered:
        assert np.prod([int(d) for d in dims.split(",")]) <= 8 * 16, dims
