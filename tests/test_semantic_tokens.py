"""Mini-batch k-means (semantic-token clustering) and the PNMI / purity metrics."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import mutual_info_score

from audiolm_jax.eval.phonetic import joint_counts, phonetic_scores
from audiolm_jax.quantization.minibatch_kmeans import (
    KMeansModel,
    KMeansState,
    fit_minibatch_kmeans,
    kmeans_plusplus,
    minibatch_step,
)


def blobs(n, centers, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centers), n)
    return (centers[labels] + spread * rng.standard_normal((n, centers.shape[1]))).astype(
        np.float32), labels


CENTERS = np.random.default_rng(42).uniform(-3, 3, (8, 5)).astype(np.float32)


def test_kmeans_plusplus_seeds_one_centroid_per_separated_blob():
    import jax
    x, labels = blobs(2000, CENTERS)
    seeds = np.asarray(kmeans_plusplus(jax.random.key(0), x, 8))
    nearest_center = np.argmin(((seeds[:, None] - CENTERS[None]) ** 2).sum(-1), axis=1)
    assert sorted(nearest_center) == list(range(8))


def test_minibatch_kmeans_matches_sklearn_inertia_on_blobs():
    def stream(seed=1):
        while True:
            x, _ = blobs(256, CENTERS, spread=0.3, seed=seed)
            seed += 1
            yield x

    model, history = fit_minibatch_kmeans(stream(), 8, num_steps=60, seed=0, progress=False,
                                          metadata={"layer": 3})
    test_x, _ = blobs(4000, CENTERS, spread=0.3, seed=999)
    reference = KMeans(8, n_init=4, random_state=0).fit(test_x)
    ours = model.inertia(test_x)
    sklearn_inertia = reference.inertia_ / len(test_x)
    assert ours < 1.05 * sklearn_inertia, (ours, sklearn_inertia)
    assert history[-1]["inertia"] < history[0]["inertia"]
    ids = model.predict(test_x.reshape(40, 100, 5))
    assert ids.shape == (40, 100) and ids.dtype == np.int32


def test_starved_cluster_is_restarted_on_batch_vectors():
    import jax
    import jax.numpy as jnp
    x, _ = blobs(512, CENTERS[:2])
    far = jnp.full((1, 5), 100.0)
    state = KMeansState(jnp.concatenate([jnp.asarray(CENTERS[:2]), far]), jnp.zeros(3))
    state, stats = minibatch_step(state, jnp.asarray(x), jax.random.key(0))
    assert int(stats["restarted"]) == 1
    # The far centroid now sits on a batch vector, and keeps a non-zero count.
    moved = np.asarray(state.centroids[2])
    assert np.min(np.abs(x - moved).sum(-1)) < 1e-6
    assert float(state.counts[2]) > 0


def test_save_load_checks_layer_and_dimension(tmp_path):
    model = KMeansModel(np.eye(4, 3, dtype=np.float32), {"encoder": "hubert", "layer": 6})
    path = model.save(tmp_path / "km.npz")
    loaded = KMeansModel.load(path, expect={"layer": 6, "dim": 3})
    np.testing.assert_array_equal(loaded.centroids, model.centroids)
    assert loaded.metadata == model.metadata
    with pytest.raises(ValueError, match="layer=6.*layer=9"):
        KMeansModel.load(path, expect={"layer": 9})
    with pytest.raises(ValueError, match="dim=3"):
        KMeansModel.load(path, expect={"dim": 768})
    with pytest.raises(ValueError, match="dimension 3"):
        loaded.predict(np.zeros((10, 5)))
    with pytest.raises(FileNotFoundError):
        KMeansModel.load(tmp_path / "missing.npz")


def test_bad_fit_inputs_are_named():
    with pytest.raises(ValueError, match="needs at least num_clusters=16"):
        fit_minibatch_kmeans([np.zeros((4, 2))], 16, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        fit_minibatch_kmeans([], 2, num_steps=1, progress=False)


def test_pnmi_and_purities():
    rng = np.random.default_rng(0)
    phones = rng.integers(0, 6, 5000)
    # Tokens that determine the phone (2 tokens per phone): PNMI 1, phone purity 1.
    tokens = phones * 2 + rng.integers(0, 2, 5000)
    scores = phonetic_scores(phones, tokens)
    assert scores.pnmi == pytest.approx(1.0, abs=1e-9)
    assert scores.phone_purity == pytest.approx(1.0)
    assert scores.cluster_purity == pytest.approx(0.5, abs=0.03)
    # Independent tokens: PNMI near 0.
    assert phonetic_scores(phones, rng.integers(0, 50, 5000)).pnmi < 0.03  # finite-sample bias ~0.014
    # Agrees with sklearn's mutual information / phone entropy.
    noisy = np.where(rng.random(5000) < 0.3, rng.integers(0, 12, 5000), tokens)
    p = np.bincount(phones) / phones.size
    expected = mutual_info_score(phones, noisy) / -np.sum(p * np.log(p))
    assert phonetic_scores(phones, noisy).pnmi == pytest.approx(expected, rel=1e-9)
    # A hand-counted purity.
    hand = phonetic_scores(np.array([0, 0, 1, 1, 1]), np.array([0, 0, 0, 1, 1]))
    assert hand.phone_purity == pytest.approx(4 / 5) and hand.cluster_purity == pytest.approx(4 / 5)
    assert joint_counts(np.array([0, 1]), np.array([2, 2])).tolist() == [[0, 0, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="same frames"):
        phonetic_scores(np.zeros(3, int), np.zeros(4, int))


def test_frame_phone_labels_follow_the_alignment():
    from audiolm_jax.eval.phonetic import frame_phone_labels, strip_stress

    vocab = {}
    labels = frame_phone_labels(["ˈoʊ", "k"], [0.02, 0.06], [0.06, 0.09], 6, 50.0, vocab)
    # Frame centres 0.01, 0.03, 0.05, 0.07, 0.09, 0.11 s.
    assert [list(vocab)[i] for i in labels] == ["sil", "oʊ", "oʊ", "k", "sil", "sil"]
    assert strip_stress("ˌʌ") == "ʌ"
    with pytest.raises(ValueError, match="differ in length"):
        frame_phone_labels(["a"], [0.0, 1.0], [1.0], 3, 50.0, vocab)


# ----------------------------------------------------------------------------- semantic tokenizer:
# length buckets, streaming k-means, fingerprints and the folder CLI (infer/semantic_tokens.py)

import dataclasses  # noqa: E402
import json  # noqa: E402

import soundfile as sf  # noqa: E402

from audiolm_jax.files import FingerprintMismatchError  # noqa: E402
from audiolm_jax.training.export import exported_fingerprint, save_exported  # noqa: E402

W2V_MICRO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 conv_depthwise_kernel_size=5, left_max_position_embeddings=8,
                 right_max_position_embeddings=4)
HUBERT_MICRO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3),
                    conv_stride=(5, 2, 2), num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4)


def random_variables(module, example, seed=0):
    """Variables of `module` drawn with numpy from the shapes of an abstract init (no compile)."""
    import jax
    from flax import linen as nn

    shapes = nn.meta.unbox(jax.eval_shape(lambda key: module.init(key, example),
                                          jax.random.key(0)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return np.ones(leaf.shape, leaf.dtype)
        if "bias" in name:
            return (0.02 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Exports of a micro w2v-BERT (two weight draws of one config) and a micro HuBERT."""
    import jax.numpy as jnp

    from audiolm_jax.models.hubert.model import HuBERT, HubertConfig
    from audiolm_jax.models.w2v_bert.model import W2vBert, W2vBertConfig

    root = tmp_path_factory.mktemp("encoders")
    w2v = W2vBertConfig(**W2V_MICRO)
    for name, seed in (("w2v", 0), ("w2v_other", 1)):
        save_exported(root / name, "w2v_bert", dataclasses.asdict(w2v),
                      random_variables(W2vBert(w2v), jnp.zeros((1, 20, 160)), seed))
    hubert = HubertConfig(**HUBERT_MICRO)
    save_exported(root / "hubert", "hubert", dataclasses.asdict(hubert),
                  random_variables(HuBERT(hubert), jnp.zeros((1, 3200))))
    return root


def speech(num_samples, seed=0):
    """Voiced syllables with noise between, at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / 16_000
    f0 = 110 + 20 * seed
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    envelope = np.maximum(0, np.sin(2 * np.pi * (3 + 0.5 * seed) * t))
    noise = 0.02 * rng.standard_normal(num_samples) * (1 - envelope)
    return (0.2 * voiced * envelope + noise).astype(np.float32)


def test_bucket_length_schedule():
    from audiolm_jax.tokenizers.semantic import bucket_length

    assert [bucket_length(n, 10) for n in (1, 10, 11, 21, 31, 41, 61, 81, 121, 161)] == \
        [10, 10, 20, 30, 40, 60, 80, 120, 160, 240]
    for n in range(1, 2000, 7):
        padded = bucket_length(n, 16)
        assert n <= padded and padded % 16 == 0 and padded <= max(16, 1.5 * n + 16)
    with pytest.raises(ValueError, match="positive"):
        bucket_length(0, 16)


def test_w2v_bert_padding_to_a_bucket_keeps_frames_and_tokens(encoders):
    import jax
    import jax.numpy as jnp

    from audiolm_jax.tokenizers.semantic import load_semantic_encoder

    encoder = load_semantic_encoder(encoders / "w2v")
    assert encoder.pads_exactly and encoder.padded_length(7_000) == 16_000
    clips = [speech(n, seed=i) for i, n in enumerate((7_000, 9_001, 12_345))]  # one 1 s bucket
    bucketed = [encoder.layer_features(c, [1, 2]) for c in clips]
    assert encoder.traces == 1           # three lengths, one bucket: one compile
    kmeans = KMeansModel(np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32))
    worst = 0.0
    unpadded = jax.jit(encoder._hidden_states)
    for clip, features in zip(clips, bucketed):
        # The same clip, unpadded (its exact length, no bucket).
        exact = unpadded(encoder.variables, clip[None], jnp.asarray([len(clip)]))
        for layer, padded in zip((1, 2), features):
            reference = np.asarray(exact[layer][0])
            assert padded.shape == reference.shape == (encoder.num_frames(len(clip)), 32)
            worst = max(worst, float(np.abs(padded - reference).max()))
            np.testing.assert_array_equal(kmeans.predict(padded), kmeans.predict(reference))
    assert worst < 1e-4, worst           # measured: 1.4e-5 on features of size ~3


def test_hubert_padding_would_change_frames_so_it_runs_exact_lengths(encoders):
    """The documented reason HuBERT is not bucketed: padded frames change the real ones."""
    import jax

    from audiolm_jax.tokenizers.semantic import load_semantic_encoder

    encoder = load_semantic_encoder(encoders / "hubert")
    assert not encoder.pads_exactly and encoder.padded_length(7_000) == 7_000
    clip = speech(7_000)
    frames = encoder.num_frames(len(clip))
    states = jax.jit(encoder._hidden_states, static_argnums=2)
    exact = states(encoder.variables, clip[None], None)
    padded = states(encoder.variables, np.pad(clip, (0, 9_000))[None], None)
    for layer in (1, 2):
        difference = np.abs(np.asarray(padded[layer][0, :frames]) -
                            np.asarray(exact[layer][0, :frames]))
        assert difference.max() > 0.1, difference.max()   # measured: 1.8-4 (features ~3.5)
    # So layer_features runs the exact length, and equals the unpadded states.
    traces = encoder.traces
    np.testing.assert_allclose(encoder.layer_features(clip, [2])[0],
                               np.asarray(exact[2][0]), atol=1e-5)
    encoder.layer_features(speech(7_320), [2])
    assert encoder.traces - traces == 2        # one compile per distinct length


def test_reservoir_frames_is_bounded_and_uniform():
    from audiolm_jax.tokenizers.semantic import reservoir_frames

    stream = (np.arange(start, start + 500, dtype=np.float32)[:, None].repeat(3, 1)
              for start in range(0, 20_000, 500))
    sample, seen = reservoir_frames(stream, 400, seed=0)
    assert seen == 20_000 and sample.shape == (400, 3)
    ids = sample[:, 0]
    assert len(np.unique(ids)) == 400
    # Uniform over the whole stream, not the first rows: about half from each half.
    assert 0.4 < np.mean(ids < 10_000) < 0.6 and ids.max() > 15_000
    everything, seen = reservoir_frames([np.ones((5, 2)), np.zeros((3, 2))], None)
    assert everything.shape == (8, 2) and seen == 8
    few, seen = reservoir_frames([np.ones((5, 2))], 100)
    assert few.shape == (5, 2) and seen == 5


def test_kmeans_records_the_encoder_and_the_tokenizer_refuses_other_weights(encoders, tmp_path):
    from audiolm_jax.tokenizers.semantic import (
        SemanticTokenizer,
        fit_semantic_kmeans,
        load_semantic_encoder,
    )

    encoder = load_semantic_encoder(encoders / "w2v")
    clips = (speech(n, seed=i) for i, n in enumerate((9_000, 11_000, 13_000)))  # a generator
    kmeans = fit_semantic_kmeans(encoder, 2, clips, 4, num_steps=3, batch_frames=32,
                                 max_frames=50, progress=False)
    assert kmeans.metadata["encoder_fingerprint"] == exported_fingerprint(encoders / "w2v")
    assert kmeans.metadata["frames_used"] == 50 < kmeans.metadata["frames_seen"]
    path = kmeans.save(tmp_path / "kmeans.npz")
    tokenizer = SemanticTokenizer.load(encoders / "w2v", path)
    assert tokenizer.fingerprints == {"encoder_fingerprint": encoder.fingerprint,
                                      "kmeans_fingerprint": kmeans.fingerprint}
    other = exported_fingerprint(encoders / "w2v_other")
    assert other != encoder.fingerprint
    with pytest.raises(FingerprintMismatchError) as info:
        SemanticTokenizer.load(encoders / "w2v_other", path)
    assert encoder.fingerprint in str(info.value) and other in str(info.value)
    assert "kmeans.npz" in str(info.value)
    forced = SemanticTokenizer.load(encoders / "w2v_other", path, force=True)
    assert forced.encoder.fingerprint == other
    # Constructing directly checks too; a model saved before fingerprints is accepted.
    with pytest.raises(FingerprintMismatchError):
        SemanticTokenizer(forced.encoder, kmeans)
    old = KMeansModel(kmeans.centroids, {k: v for k, v in kmeans.metadata.items()
                                         if k != "encoder_fingerprint"})
    SemanticTokenizer(forced.encoder, old)


def write_clips(folder):
    """a.wav and a.flac (same stem), sub/b.wav, a too-short clip and a NaN file."""
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", speech(7_000, seed=1), 16_000)
    sf.write(folder / "a.flac", speech(9_000, seed=2), 16_000)
    sf.write(folder / "sub" / "b.wav", speech(20_000, seed=3), 16_000)      # the 2 s bucket
    sf.write(folder / "short.wav", np.zeros(100, np.float32), 16_000)
    sf.write(folder / "bad.wav", np.full(800, np.nan, np.float32), 16_000, subtype="FLOAT")


def test_cli_streams_buckets_keeps_extensions_and_records_fingerprints(encoders, tmp_path,
                                                                       capsys, monkeypatch):
    from audiolm_jax.audio.io import load_audio
    from audiolm_jax.tokenizers.semantic import SemanticTokenizer, load_semantic_encoder
    from infer import semantic_tokens
    from infer.semantic_tokens import main

    folder, out = tmp_path / "in", tmp_path / "out"
    write_clips(folder)
    assert main(["--encoder", str(encoders / "w2v"), "--input", str(folder), "--output",
                 str(out), "--fit-kmeans", "4", "--layer", "1", "--kmeans-steps", "3",
                 "--max-kmeans-frames", "40"]) == 0
    printed = capsys.readouterr().out
    assert "3 files" in printed and "2 skipped" in printed
    assert "2 length buckets, encoder compiled 2x" in printed      # 3 lengths, 2 buckets
    manifest = [json.loads(line) for line in (out / "tokens.jsonl").read_text().splitlines()]
    assert [r["file"] for r in manifest] == ["a.flac", "a.wav", "sub/b.wav"]
    assert [r["tokens"] for r in manifest] == ["a.flac.npy", "a.wav.npy", "sub/b.wav.npy"]
    kmeans = KMeansModel.load(out / "kmeans.npz")
    assert kmeans.metadata["frames_used"] == 40
    fingerprint = exported_fingerprint(encoders / "w2v")
    assert kmeans.metadata["encoder_fingerprint"] == fingerprint
    assert all(r["encoder_fingerprint"] == fingerprint and
               r["kmeans_fingerprint"] == kmeans.fingerprint for r in manifest)
    tokenizer = SemanticTokenizer(load_semantic_encoder(encoders / "w2v"), kmeans)
    for record in manifest:
        ids = np.load(out / record["tokens"])
        audio, _ = load_audio(folder / record["file"], 16_000)
        np.testing.assert_array_equal(ids, tokenizer.tokenize(audio, 16_000))
        assert ids.dtype == np.int32 and len(ids) == record["num_tokens"]
    skipped = (out / "skipped.txt").read_text()
    assert "short.wav: 100 samples is shorter than one frame" in skipped
    assert "bad.wav: unreadable" in skipped and "NaN" in skipped
    assert not list(out.rglob(".*.tmp*"))                           # no temporary files left

    # --kmeans with another encoder of the same shape: refused, naming both; --force runs.
    other = exported_fingerprint(encoders / "w2v_other")
    again = ["--encoder", str(encoders / "w2v_other"), "--input", str(folder), "--output",
             str(tmp_path / "other"), "--kmeans", str(out / "kmeans.npz")]
    assert main(again) == 1
    error = capsys.readouterr().err
    assert fingerprint in error and other in error and "--force" in error
    assert main([*again, "--force"]) == 0
    assert (tmp_path / "other" / "a.wav.npy").is_file()

    # Streaming: clips are decoded one at a time, as they are consumed.
    loads = []
    real_load = semantic_tokens.load_audio
    monkeypatch.setattr(semantic_tokens, "load_audio",
                        lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    files = sorted(folder.rglob("*.wav"))
    clips = semantic_tokens.iter_clips(files, folder, tokenizer.encoder, {}, "test")
    next(clips)
    assert len(loads) == 1
