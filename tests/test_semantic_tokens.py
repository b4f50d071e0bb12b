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
