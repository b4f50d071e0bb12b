"""Melody embedder: the semitone front end, aligned pair batches, learning on pairs, the
trainer end to end with melody tokens, and global-batch negatives on a mesh."""

import json

import jax
import numpy as np
import pytest

from audiolm_jax.audio.pitch import chroma, semitone_filterbank, semitone_spectrogram
from audiolm_jax.data.pipeline import make_pair_pipeline
from audiolm_jax.data.sources import ManifestSource, group_indices, split_holdout_groups
from audiolm_jax.models import melody as melody_lib
from audiolm_jax.tokenizers.mulan import MelodyTokenizer
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.loop import jit_train_step
from audiolm_jax.training.optimizers import make_optimizer
from configs.melody import tiny

SR = 16_000


def tone(midi, seconds=1.0, harmonics=(1.0,), sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    f = 440.0 * 2 ** ((midi - 69) / 12)
    return sum(a * np.sin(2 * np.pi * f * (k + 1) * t) for k, a in enumerate(harmonics))


def test_semitone_spectrogram_peaks_at_the_played_note():
    bank = semitone_filterbank(SR, 4096, 36, 96)
    assert bank.shape == (2049, 61)
    np.testing.assert_allclose(bank.sum(axis=0), 1.0, rtol=1e-5)   # every pitch has weight
    for midi in (45, 57, 69, 81):   # A2 .. A5
        spec = np.asarray(semitone_spectrogram(np.float32(tone(midi))[None], SR))[0]
        assert spec.shape == (1 + SR // 512, 61)
        assert int(np.argmax(spec[10])) == midi - 36
        energy = np.asarray(chroma(np.exp(spec[10:11]), 36))[0]
        assert int(np.argmax(energy)) == 9     # pitch class A
    with pytest.raises(ValueError, match="above the Nyquist"):
        semitone_filterbank(8_000, 1024, 36, 120)
    with pytest.raises(ValueError, match="shorter than half"):
        semitone_spectrogram(np.zeros((1, 1000), np.float32), SR)


def test_pitch_features_ignore_loudness():
    config = melody_lib.MelodyConfig(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64,
                                     clip_seconds=1.0)
    x = np.float32(tone(60, harmonics=(1.0, 0.5, 0.25)))[None]
    loud, valid = melody_lib.pitch_features(x, None, config)
    soft, _ = melody_lib.pitch_features(0.1 * x, None, config)
    assert loud.shape == (1, (1 + SR // 512) // 4, 4 * 61) and bool(valid.all())
    np.testing.assert_allclose(np.asarray(loud)[:, 1:-1], np.asarray(soft)[:, 1:-1], atol=2e-2)


@pytest.fixture(scope="module")
def music_corpus(tmp_path_factory):
    from audiolm_jax.data.corpora.music import build_music_corpus

    return build_music_corpus("tiny", root=tmp_path_factory.mktemp("corpora"), progress=False)


def test_pair_batches_hold_two_renderings_of_one_melody_at_one_offset(music_corpus):
    source = ManifestSource(music_corpus)
    groups = group_indices(source, "melody_id")
    assert len(groups) == 4 and all(len(g) == 2 for g in groups)
    pipeline = make_pair_pipeline(source, groups, sample_rate=SR, crop_samples=SR,
                                  batch_size=4, seed=0, num_threads=1)
    batch = next(iter(pipeline))
    assert batch["audio_a"].shape == (4, SR, 1) and batch["mask_a"].all()
    assert len(set(batch["group"].tolist())) == 4          # no melody twice in a batch
    assert not np.allclose(batch["audio_a"], batch["audio_b"])
    with pytest.raises(ValueError, match="more than the 4 groups"):
        make_pair_pipeline(source, groups, sample_rate=SR, crop_samples=SR, batch_size=5,
                           seed=0)
    # Two passages per melody, adjacent and at least half a window apart.
    hard = next(iter(make_pair_pipeline(source, groups, sample_rate=SR, crop_samples=SR,
                                        batch_size=4, seed=0, crops_per_group=2,
                                        num_threads=1)))
    assert hard["audio_a"].shape == (4, SR, 1)
    assert hard["group"][0] == hard["group"][1] != hard["group"][2] == hard["group"][3]
    assert not np.allclose(hard["audio_a"][0], hard["audio_a"][1])
    train, held = split_holdout_groups(source, "melody_id", 0.25)
    train_ids = {source.rows[i]["melody_id"] for i in train.indices}
    held_ids = {source.rows[i]["melody_id"] for i in held.indices}
    assert len(held_ids) == 1 and not train_ids & held_ids and len(held) == 2


def micro_config():
    c = tiny.get_config()
    c.model.update(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, embed_dim=16,
                   clip_seconds=1.0)
    c.rvq.update(num_quantizers=2, codebook_size=4, steps=5, windows_per_clip=2)
    c.optimizer.update(lr=3e-3, warmup_steps=0)
    c.train.update(num_steps=4, log_every=2, save_every=4, eval_every=2, progress=False)
    c.data.update(batch_size=2, num_threads=1, eval_fraction=0.25)
    c.mesh.shape.update(data=2, tensor=-1)   # 8 test devices; 3 training melodies
    return c


def pair_batch(n=8):
    """Pair i: the same 4-note phrase on a sine (a) and a bright 4-harmonic timbre (b)."""
    rng = np.random.default_rng(0)
    a, b = [], []
    for _ in range(n):
        notes = rng.integers(55, 80, 4)
        a.append(np.concatenate([tone(m, 0.25) for m in notes]))
        b.append(np.concatenate([tone(m, 0.25, (1.0, 0.7, 0.5, 0.3)) for m in notes]))
    a = np.float32(0.3 * np.stack(a))[..., None]
    b = np.float32(0.2 * np.stack(b))[..., None]
    ones = np.ones(a.shape[:2], bool)
    return {"audio_a": a, "mask_a": ones, "audio_b": b, "mask_b": ones}


def run_steps(config, mesh_shape, rules, devices, steps):
    mesh = mesh_lib.create_mesh(mesh_shape, devices)
    rules = mesh_lib.get_rules(rules)
    model = melody_lib.MelodyEmbedder(melody_lib.MelodyConfig(**config.model.to_dict()))
    init_fn = melody_lib.make_init_fn(model, make_optimizer(config.optimizer))
    state, shardings = state_lib.create_sharded_state(init_fn, mesh, rules, jax.random.key(0))
    step = jit_train_step(melody_lib.make_train_step(model), shardings, mesh)
    data = mesh_lib.make_global_batch(pair_batch(), mesh)
    history = []
    with mesh_lib.sharding_context(mesh, rules):
        for _ in range(steps):
            state, metrics = step(state, data, jax.random.key(1))
            history.append(jax.device_get(metrics))
    return history


def test_learns_pairs_and_matches_single_device_on_a_mesh():
    config = micro_config()
    history = run_steps(config, (1, 1, 1), "dp", jax.devices()[:1], 25)
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    sharded = run_steps(config, (8, 1, 1), "dp", jax.devices(), 2)
    for a, b in zip(history[:2], sharded):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-5)


def test_trainer_reports_melody_retrieval_and_fits_tokens(music_corpus, tmp_path):
    from train.melody import train_and_evaluate

    config = micro_config()
    config.data.update(corpus_size="tiny", corpus_root=str(music_corpus.parent))
    result = train_and_evaluate(config, tmp_path / "run")
    assert result.last_step == 4
    report = json.loads((tmp_path / "run" / "melody_retrieval.json").read_text())
    # One held-out melody x 2 renderings x 2 offsets (0 s and 3 s fit in 4 s clips):
    # each window has 1 sibling among 3 candidates.
    assert report["queries"] == 4 and report["candidates"] == 3
    np.testing.assert_allclose(report["chance_R@1"], 1 / 3, atol=0.05)
    melody = MelodyTokenizer.load(tmp_path / "run" / "export")
    clip = np.float32(tone(60, 3.0))
    tokens = melody.tokens(clip, SR, hop_seconds=1.0)
    assert tokens.shape == (3, 2) and tokens.dtype == np.int32
    with pytest.raises(ValueError, match="shorter than the model's 1 s window"):
        melody.tokens(clip[:8000], SR)
    # The codebooks record the export they were fitted on: next to other weights
    # (here: the export re-saved with one parameter changed) they are refused.
    from audiolm_jax.files import FingerprintMismatchError
    from audiolm_jax.training.export import exported_fingerprint, load_exported, save_exported

    export = tmp_path / "run" / "export"
    assert melody.rvq.encoder_fingerprint == exported_fingerprint(export)
    config_dict, variables = load_exported(export)
    variables = jax.tree.map(np.array, variables)               # writable copies
    first = jax.tree.leaves(variables)[0]
    first.flat[0] += 1.0
    save_exported(export, "melody", config_dict, variables)
    with pytest.raises(FingerprintMismatchError, match="fingerprint"):
        MelodyTokenizer.load(export)
