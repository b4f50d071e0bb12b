"""k-means, vector quantization and residual VQ: parity with transformers' EnCodec
quantizer and the training features (k-means init, EMA, dead codes, dropout)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from audiolm_jax.quantization.kmeans import kmeans, nearest_centroid
from audiolm_jax.quantization.vq import (
    QuantizerOutput,
    ResidualVectorQuantizer,
    VectorQuantizer,
    bandwidth_to_num_quantizers,
    check_codes,
    num_quantizers_to_bandwidth,
)
from audiolm_jax.training.mesh import RULE_SETS


def _normal(seed, shape, scale=1.0):
    # Test data from numpy: every jax.random call on a new shape is a compilation.
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _init(model, x):
    # Through `encode`: the same variables as `__call__` creates, and cheaper to compile.
    return nn.unbox(model.init(jax.random.key(0), x, method="encode"))


def _with_layer(variables, layer, **arrays):
    """A copy of `variables` with codebook arrays replaced (layer None: a lone VectorQuantizer)."""
    variables = jax.tree.map(lambda a: a, variables)
    scope = variables["codebook"] if layer is None else variables["codebook"][f"layers_{layer}"]
    for key, value in arrays.items():
        scope[key] = jnp.asarray(value, jnp.float32)
    return variables


def _train_step(model, **call_kwargs):
    """jit(variables, x, rng, mask) -> (QuantizerOutput, updated variables)."""

    @jax.jit
    def step(variables, x, rng, mask=None):
        out, updates = model.apply(variables, x, train=True, rng=rng, mask=mask,
                                   mutable=["codebook"], **call_kwargs)
        return out, {**variables, **updates}

    return step


# --------------------------------------------------------------------------- bandwidths


def test_bandwidth_mapping_matches_encodec():
    pairs = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}
    for kbps, n in pairs.items():
        assert bandwidth_to_num_quantizers(kbps, 75, 1024) == n
        assert num_quantizers_to_bandwidth(n, 75, 1024) == pytest.approx(kbps)
    # EnCodec 48 kHz: 150 frames/s.
    assert [bandwidth_to_num_quantizers(b, 150, 1024) for b in (3, 6, 12, 24)] == [2, 4, 8, 16]

    from transformers import EncodecConfig
    from transformers.models.encodec.modeling_encodec import EncodecResidualVectorQuantizer
    reference = EncodecResidualVectorQuantizer(EncodecConfig(hidden_size=4))   # 24 kHz model
    assert (reference.num_quantizers, reference.frame_rate, reference.codebook_size) == (32, 75, 1024)
    for kbps in (0.75, 1.5, 2.0, 3.0, 5.9, 6.0, 7.5, 12.0, 24.0):
        assert (bandwidth_to_num_quantizers(kbps, reference.frame_rate, 1024)
                == reference.get_num_quantizers_for_bandwidth(kbps)), kbps


@pytest.mark.parametrize("kbps, kwargs, message", [
    (0.0, {}, "unsupported bandwidth 0.0"),
    (-3.0, {}, "unsupported bandwidth -3.0"),
    (float("nan"), {}, "unsupported bandwidth nan"),
    (0.5, {}, "unsupported bandwidth 0.5 kbps: one codebook"),
    (48.0, {"max_quantizers": 32}, "unsupported bandwidth 48.0 kbps: needs 64 codebooks"),
    (4.5, {"supported": (1.5, 3.0, 6.0)}, r"unsupported bandwidth 4.5 kbps: this model supports"),
])
def test_bandwidth_errors_name_the_bandwidth(kbps, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bandwidth_to_num_quantizers(kbps, 75, 1024, **kwargs)


# --------------------------------------------------------------------------- parity


def test_codes_and_decode_match_transformers_encodec():
    import torch
    from transformers import EncodecConfig
    from transformers.models.encodec.modeling_encodec import EncodecResidualVectorQuantizer

    config = EncodecConfig(codebook_size=64, hidden_size=16, target_bandwidths=[0.9, 1.8, 3.6])
    reference = EncodecResidualVectorQuantizer(config).eval()
    n_q, k, d = config.num_quantizers, config.codebook_size, config.codebook_dim
    assert (n_q, k, d) == (8, 64, 16)

    rng = np.random.default_rng(0)
    for i, layer in enumerate(reference.layers):
        embed = rng.normal(size=(k, d)).astype(np.float32) * 0.7 ** i
        embed[5] = embed[3]       # an exact tie: both pick the lower index
        book = layer.codebook
        book.embed.copy_(torch.from_numpy(embed))
        book.embed_avg.copy_(torch.from_numpy(embed * 3))
        book.cluster_size.copy_(torch.from_numpy(rng.uniform(1, 5, k).astype(np.float32)))

    embeddings = rng.normal(size=(3, d, 40)).astype(np.float32)     # HF: [batch, dim, frames]
    embeddings[0, :, 0] = reference.layers[0].codebook.embed[3].numpy()
    x = jnp.asarray(embeddings.transpose(0, 2, 1))                  # ours: [batch, frames, dim]

    # The importer's map: quantizer.layers.{i}.codebook.{embed, embed_avg, cluster_size,
    # inited} -> codebook/layers_{i}/{embed, embed_avg, cluster_size, initialized}.
    model = ResidualVectorQuantizer(dim=d, num_quantizers=n_q, codebook_size=k)
    template = _init(model, x)
    variables = {"codebook": {
        f"layers_{i}": {
            "embed": jnp.asarray(layer.codebook.embed.numpy()),
            "embed_avg": jnp.asarray(layer.codebook.embed_avg.numpy()),
            "cluster_size": jnp.asarray(layer.codebook.cluster_size.numpy()),
            "initialized": jnp.asarray(layer.codebook.inited.numpy().reshape(())),
        } for i, layer in enumerate(reference.layers)}}
    assert jax.tree.structure(variables) == jax.tree.structure(template)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, template)

    for bandwidth in (0.45, 0.9, 3.6):
        n = bandwidth_to_num_quantizers(bandwidth, config.frame_rate, k)
        assert n == reference.get_num_quantizers_for_bandwidth(bandwidth)
        with torch.no_grad():
            ref_codes = reference.encode(torch.from_numpy(embeddings), bandwidth)   # [n, b, t]
            ref_decoded = reference.decode(ref_codes).numpy().transpose(0, 2, 1)
        ref_codes = ref_codes.numpy().transpose(1, 2, 0)
        codes = model.apply(variables, x, n, method="encode")
        np.testing.assert_array_equal(np.asarray(codes), ref_codes)
        decoded = model.apply(variables, codes, method="decode")
        np.testing.assert_allclose(np.asarray(decoded), ref_decoded, atol=1e-5, rtol=0)
        out = model.apply(variables, x, train=False, num_quantizers=n)
        np.testing.assert_array_equal(np.asarray(out.codes), ref_codes)
        np.testing.assert_allclose(np.asarray(out.quantized), ref_decoded, atol=1e-5, rtol=0)
        assert int(out.num_active) == n and out.perplexity.shape == (n,)
    assert int(ref_codes[0, 0, 0]) == 3


# --------------------------------------------------------------------------- k-means


def test_kmeans_finds_well_separated_clusters():
    centers = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = jnp.asarray(np.repeat(np.asarray(centers), 60, axis=0) + np.asarray(_normal(1, (180, 2), 0.3)))
    keys = jax.random.split(jax.random.key(2), 16)
    centroids, counts = jax.vmap(lambda key: kmeans(key, x, 3, 20))(keys)
    np.testing.assert_allclose(np.asarray(counts.sum(-1)), 180)
    # Random-sample init can start two centroids in one cluster (Lloyd's then
    # stays in a local optimum), so judge the lowest-inertia run of several.
    inertia = jax.vmap(lambda c: jnp.min(jnp.sum((x[:, None] - c[None]) ** 2, -1), -1).sum())(
        centroids)
    best = int(jnp.argmin(inertia))
    match = np.asarray(nearest_centroid(centers, centroids[best]))  # centroid of each center
    assert sorted(match.tolist()) == [0, 1, 2]
    true_means = np.asarray(x).reshape(3, 60, 2).mean(1)
    np.testing.assert_allclose(np.asarray(centroids[best])[match], true_means, atol=1e-4)
    np.testing.assert_allclose(np.asarray(counts[best])[match], 60)


def test_kmeans_empty_clusters_keep_their_centroid_and_mask_excludes_rows():
    a, b = np.array([1.0, 2.0]), np.array([-3.0, 0.5])
    valid = np.stack([a, b] * 5)                                    # only 2 distinct vectors
    x = jnp.asarray(np.concatenate([valid, np.full((5, 2), 1000.0)]), jnp.float32)
    mask = jnp.asarray(np.arange(15) < 10)
    centroids, counts = kmeans(jax.random.key(0), x, 4, 5, mask=mask)
    assert np.isfinite(np.asarray(centroids)).all()
    for c in np.asarray(centroids):                                 # never an outlier, never NaN
        assert np.allclose(c, a) or np.allclose(c, b)
    assert float(counts.sum()) == 10 and int((counts == 0).sum()) >= 2


# --------------------------------------------------------------------------- training


def test_kmeans_init_runs_on_first_batch_only():
    model = ResidualVectorQuantizer(dim=4, num_quantizers=2, codebook_size=8, kmeans_iters=10,
                                    decay=1.0, threshold_ema_dead_code=0)
    x1 = _normal(0, (4, 32, 4))
    # init (even with train=True) never runs k-means: the init batch is usually a dummy.
    v0 = nn.unbox(model.init(jax.random.key(0), x1, train=True, rng=jax.random.key(1)))
    assert float(v0["codebook"]["layers_0"]["initialized"]) == 0
    assert not np.asarray(v0["codebook"]["layers_0"]["embed"]).any()

    step = _train_step(model)
    out1, v1 = step(v0, x1, jax.random.key(2))
    for i in range(2):
        book = v1["codebook"][f"layers_{i}"]
        assert float(book["initialized"]) == 1
        assert float(book["cluster_size"].sum()) == pytest.approx(128)
    embed = np.asarray(v1["codebook"]["layers_0"]["embed"])
    assert np.abs(embed).max() < float(jnp.abs(x1).max())          # means of batch vectors
    assert len(np.unique(np.asarray(out1.codes[..., 0]))) > 4

    # A very different second batch: with decay=1 nothing may move, and a second
    # k-means would have put the codes near +100.
    _, v2 = step(v1, x1 + 100.0, jax.random.key(3))
    for i in range(2):
        for name in ("embed", "embed_avg", "cluster_size", "initialized"):
            np.testing.assert_array_equal(np.asarray(v2["codebook"][f"layers_{i}"][name]),
                                          np.asarray(v1["codebook"][f"layers_{i}"][name]))


def test_training_without_rng_is_a_clear_error():
    model = ResidualVectorQuantizer(dim=4, num_quantizers=2, codebook_size=8)
    x = _normal(0, (2, 8, 4))
    variables = _init(model, x)
    with pytest.raises(ValueError, match="needs rng"):
        model.apply(variables, x, train=True, mutable=["codebook"])
    # Not mutable: no codebook updates, so no rng is needed.
    model.apply(variables, x, train=True)


def test_ema_update_follows_encodec_formula_and_moves_codes_to_their_vectors():
    decay, eps, k, d = 0.8, 1e-5, 4, 3
    model = VectorQuantizer(dim=d, codebook_size=k, decay=decay, epsilon=eps,
                            kmeans_init=False, threshold_ema_dead_code=0)
    embed = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]], np.float32)
    cluster = np.array([4.0, 3.0, 2.0, 1.0], np.float32)
    target = np.array([1.0, 1.0, 0.0], np.float32)                   # nearest to code 0
    x = jnp.asarray(target + 0.1 * np.asarray(_normal(1, (2, 10, d))))
    variables = _with_layer(_init(model, x), None, embed=embed, embed_avg=embed * cluster[:, None],
                            cluster_size=cluster)
    out, new = _train_step(model)(variables, x, jax.random.key(0))

    flat = np.asarray(x).reshape(-1, d)
    codes = np.argmin(((flat[:, None] - embed[None]) ** 2).sum(-1), -1)
    np.testing.assert_array_equal(np.asarray(out.codes).reshape(-1), codes)
    onehot = np.eye(k, dtype=np.float32)[codes]
    cs = cluster * decay + onehot.sum(0) * (1 - decay)
    avg = embed * cluster[:, None] * decay + (onehot.T @ flat) * (1 - decay)
    smoothed = (cs + eps) / (cs.sum() + k * eps) * cs.sum()
    book = new["codebook"]
    np.testing.assert_allclose(np.asarray(book["cluster_size"]), cs, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(book["embed_avg"]), avg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(book["embed"]), avg / smoothed[:, None], rtol=1e-5,
                               atol=1e-6)
    before = np.linalg.norm(embed[0] - flat.mean(0))
    after = np.linalg.norm(np.asarray(book["embed"])[0] - flat.mean(0))
    assert after < 0.9 * before


def test_dead_codes_restart_from_valid_batch_vectors():
    k, d, threshold = 8, 4, 2.0
    model = VectorQuantizer(dim=d, codebook_size=k, kmeans_init=False,
                            threshold_ema_dead_code=threshold)
    live = np.asarray(_normal(0, (4, d)))
    embed = np.concatenate([live, np.full((4, d), 1e3, np.float32)])   # codes 4..7 are unused
    cluster = np.array([50, 50, 50, 50, 0, 0, 0, 0], np.float32)
    x = live[np.arange(48) % 4].reshape(2, 24, d) + np.asarray(_normal(1, (2, 24, d), 0.05))
    mask = np.arange(24)[None, :].repeat(2, 0) < 20
    x = np.where(mask[..., None], x, -500.0)                         # padding: must not be drawn
    x, mask = jnp.asarray(x, jnp.float32), jnp.asarray(mask)
    variables = _with_layer(_init(model, x), None, embed=embed,
                            embed_avg=embed * cluster[:, None], cluster_size=cluster)
    _, new = _train_step(model)(variables, x, jax.random.key(3), mask)

    book = jax.tree.map(np.asarray, new["codebook"])
    valid_rows = np.asarray(x)[np.asarray(mask)]
    for code in range(4, 8):
        matches = np.all(valid_rows == book["embed"][code], axis=-1)
        assert matches.any(), f"code {code} was not restarted to a valid batch vector"
    assert len({tuple(row) for row in book["embed"][4:]}) == 4          # distinct draws
    np.testing.assert_allclose(book["cluster_size"][4:], threshold)
    np.testing.assert_allclose(book["embed_avg"][4:], book["embed"][4:] * threshold)
    assert np.all(book["cluster_size"][:4] > threshold)
    assert np.all(np.abs(book["embed"][:4] - live) < 0.2)                # live codes: EMA only


def test_quantizer_dropout_samples_from_the_allowed_set():
    # 16 codes = 4 bits at 75 frames/s: 0.3 kbps per codebook.
    model = ResidualVectorQuantizer(dim=4, num_quantizers=8, codebook_size=16, kmeans_init=False,
                                    quantizer_dropout=True, bandwidths=(0.3, 0.6, 1.2, 2.4),
                                    frame_rate=75)
    x = _normal(0, (2, 10, 4))
    variables = _init(model, x)
    assert model.allowed_num_quantizers == (1, 2, 4, 8)

    # The reference in numpy: every layer's vectors and commitment loss.
    books = [np.asarray(variables["codebook"][f"layers_{i}"]["embed"]) for i in range(8)]
    codes = np.asarray(model.apply(variables, x, method="encode"))
    residual, vectors, losses = np.asarray(x), [], []
    for i in range(8):
        vectors.append(books[i][codes[..., i]])
        losses.append(np.mean((vectors[-1] - residual) ** 2))
        residual = residual - vectors[-1]

    run = jax.jit(lambda rng: model.apply(variables, x, train=True, rng=rng))
    seen = set()
    for seed in range(16):
        out = run(jax.random.key(seed))
        n = int(out.num_active)
        seen.add(n)
        assert out.perplexity.shape == (8,)
        # Every layer still encodes; only the first n are summed and in the loss.
        np.testing.assert_array_equal(np.asarray(out.codes), codes)
        np.testing.assert_allclose(np.asarray(out.quantized), sum(vectors[:n]), atol=1e-5)
        np.testing.assert_allclose(float(out.commitment_loss), np.mean(losses[:n]), rtol=1e-5)
    assert seen <= {1, 2, 4, 8} and len(seen) >= 3

    # Without bandwidths: 1..n_q. Dropout off, or evaluation: always every layer.
    plain = model.clone(bandwidths=None)
    run = jax.jit(lambda rng: plain.apply(variables, x, train=True, rng=rng).num_active)
    seen = {int(run(jax.random.key(s))) for s in range(16)}
    assert seen <= set(range(1, 9)) and len(seen) >= 4
    assert int(model.apply(variables, x, train=False).num_active) == 8
    off = model.clone(quantizer_dropout=False)
    assert int(off.apply(variables, x, train=True, rng=jax.random.key(0)).num_active) == 8
    with pytest.raises(ValueError, match="unsupported bandwidth 4.8"):
        model.clone(bandwidths=(0.3, 4.8)).apply(variables, x, train=False)


def test_straight_through_gradient_is_identity():
    model = ResidualVectorQuantizer(dim=4, num_quantizers=3, codebook_size=8, kmeans_iters=5,
                                    quantizer_dropout=True)
    x = _normal(0, (2, 12, 4))
    variables = _init(model, x)

    @jax.jit
    def grads(x):
        def apply(x):
            out, _ = model.apply(variables, x, train=True, rng=jax.random.key(1),
                                 mutable=["codebook"])
            return out

        ones = jax.grad(lambda x: jnp.sum(apply(x).quantized))(x)
        return ones, jax.grad(lambda x: apply(x).commitment_loss)(x), apply(x).quantized

    ones, loss_grad, quantized = grads(x)
    np.testing.assert_allclose(np.asarray(ones), 1.0)
    assert np.abs(np.asarray(quantized - x)).max() > 1e-3           # it did quantize
    assert np.abs(np.asarray(loss_grad)).max() > 0


def test_commitment_loss_decreases_when_training_a_linear_encoder():
    model = ResidualVectorQuantizer(dim=8, num_quantizers=2, codebook_size=16, kmeans_init=False)
    z = _normal(0, (8, 32, 4))
    codebooks = nn.unbox(model.init(jax.random.key(1), jnp.zeros((1, 1, 8)), train=False))
    weights = {"w": _normal(2, (4, 8)), "b": jnp.zeros((8,))}
    tx = optax.adam(3e-2)

    def loss_fn(weights):
        out = model.apply(codebooks, z @ weights["w"] + weights["b"], train=True)
        return out.commitment_loss

    @jax.jit
    def step(weights, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(weights)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(weights, updates), opt_state, loss

    opt_state = tx.init(weights)
    losses = []
    for _ in range(100):
        weights, opt_state, loss = step(weights, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


def test_perplexity_is_codebook_usage():
    k, d = 8, 3
    model = VectorQuantizer(dim=d, codebook_size=k, kmeans_init=False)
    embed = np.asarray(_normal(0, (k, d), 3.0))
    variables = _with_layer(_init(model, jnp.zeros((1, 1, d))), None, embed=embed)
    uniform = jnp.asarray(np.tile(embed, (4, 1)).reshape(2, 16, d))
    out = model.apply(variables, uniform, train=False)
    assert isinstance(out, QuantizerOutput) and out.codes.shape == (2, 16, 1)
    assert float(out.perplexity[0]) == pytest.approx(k, rel=1e-5)
    collapsed = jnp.asarray(np.broadcast_to(embed[2], (2, 16, d)))
    assert float(model.apply(variables, collapsed, train=False).perplexity[0]) == pytest.approx(1)
    # Only valid frames count: mask out everything but code 2's frames.
    mask = jnp.asarray(np.asarray(out.codes[..., 0]) == 2)
    masked = model.apply(variables, uniform, train=False, mask=mask)
    assert float(masked.perplexity[0]) == pytest.approx(1)
    assert float(masked.commitment_loss) == pytest.approx(0, abs=1e-6)


def test_reconstruction_improves_with_more_codebooks():
    model = ResidualVectorQuantizer(dim=8, num_quantizers=6, codebook_size=32, kmeans_iters=20)
    x = _normal(0, (4, 64, 8))
    _, variables = _train_step(model)(_init(model, x), x, jax.random.key(1))
    codes = model.apply(variables, x, method="encode")
    assert codes.shape == (4, 64, 6) and codes.dtype == jnp.int32
    # decode(codes[..., :n]) is the sum of the first n books' vectors (decode itself
    # is checked against EnCodec above); here in numpy, to spare compilations.
    books = [np.asarray(variables["codebook"][f"layers_{i}"]["embed"]) for i in range(6)]
    decoded = np.cumsum([books[i][np.asarray(codes[..., i])] for i in range(6)], axis=0)
    np.testing.assert_allclose(np.asarray(model.apply(variables, codes, method="decode")),
                               decoded[-1], atol=1e-5)
    errors = [float(np.mean((decoded[n] - np.asarray(x)) ** 2)) for n in range(6)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.25 * float(jnp.mean(x ** 2))


def test_bad_codes_are_clear_errors():
    model = ResidualVectorQuantizer(dim=4, num_quantizers=3, codebook_size=8, kmeans_init=False)
    variables = _init(model, jnp.zeros((1, 1, 4)))
    codes = np.zeros((2, 5, 3), np.int32)
    codes[1, 3, 2] = 8
    with pytest.raises(ValueError, match=r"code 8 at index \(1, 3, 2\) \(codebook 2\)"):
        model.apply(variables, jnp.asarray(codes), method="decode")
    codes[1, 3, 2] = -1
    with pytest.raises(ValueError, match=r"code -1 .*codebook 2"):
        check_codes(codes, 8)
    with pytest.raises(ValueError, match="1 <= n_q <= 3"):
        model.apply(variables, jnp.zeros((2, 5, 4), jnp.int32), method="decode")
    with pytest.raises(ValueError, match="integers"):
        check_codes(np.zeros((2, 3), np.float32), 8)
    with pytest.raises(ValueError, match="num_quantizers must be an int in 1..3"):
        model.apply(variables, jnp.zeros((1, 2, 4)), 4, method="encode")
    with pytest.raises(ValueError, match=r"expected vectors \[..., 4\]"):
        model.apply(variables, jnp.zeros((1, 2, 5)), method="encode")
    # Inside jit values are unknown: a bad code becomes NaN, never a silent valid vector.
    decoded = jax.jit(lambda c: model.apply(variables, c, method="decode"))(jnp.asarray(codes))
    assert np.isnan(np.asarray(decoded[1, 3])).all() and np.isfinite(np.asarray(decoded[0])).all()


def test_padding_takes_no_part_in_updates_or_losses():
    model = ResidualVectorQuantizer(dim=4, num_quantizers=2, codebook_size=8, kmeans_init=False,
                                    threshold_ema_dead_code=0)
    x = _normal(0, (2, 8, 4))
    padded = jnp.asarray(np.concatenate([x, np.full((2, 4, 4), 1e3, np.float32)], axis=1))
    mask = jnp.asarray(np.arange(12)[None].repeat(2, 0) < 8)
    variables = _init(model, x)
    step = _train_step(model)
    out_a, new_a = step(variables, x, jax.random.key(0))
    out_b, new_b = step(variables, padded, jax.random.key(0), mask)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                         atol=1e-6), new_a, new_b)
    np.testing.assert_allclose(float(out_a.commitment_loss), float(out_b.commitment_loss),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out_a.perplexity), np.asarray(out_b.perplexity),
                               rtol=1e-5)


def test_sharded_train_step_uses_the_global_batch():
    """Data parallel over 8 devices gives the single-device update (global statistics)."""
    model = ResidualVectorQuantizer(dim=4, num_quantizers=3, codebook_size=16, kmeans_iters=10,
                                    quantizer_dropout=True)
    x = _normal(0, (8, 16, 4))
    variables = _init(model, x)
    step = _train_step(model)
    rng = jax.random.key(5)
    out_1, new_1 = step(variables, x, rng)                           # one device

    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    replicated = jax.device_put(variables, NamedSharding(mesh, P()))
    assert len(x_sharded.sharding.device_set) == 8
    out_8, new_8 = step(replicated, x_sharded, rng)
    assert int(out_8.num_active) == int(out_1.num_active)
    np.testing.assert_array_equal(np.asarray(out_8.codes), np.asarray(out_1.codes))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                         atol=1e-5), new_8, new_1)


def test_vector_quantizer_round_trip_and_layout():
    model = VectorQuantizer(dim=4, codebook_size=8, kmeans_init=False)
    x = _normal(0, (2, 6, 4))
    variables = model.init(jax.random.key(0), x, train=False)
    specs = nn.get_partition_spec(variables)["codebook"]
    assert specs["embed"] == P("codebook_size", "codebook_dim")
    assert specs["cluster_size"] == P("codebook_size")
    for rules in RULE_SETS.values():                                 # replicated everywhere
        assert nn.logical_to_mesh_axes(specs["embed"], rules) == P(None, None)
    variables = nn.unbox(variables)
    shapes = jax.tree.map(jnp.shape, variables["codebook"])
    assert shapes == {"embed": (8, 4), "embed_avg": (8, 4), "cluster_size": (8,),
                      "initialized": ()}
    assert float(variables["codebook"]["initialized"]) == 1.0       # no k-means pending
    embed = variables["codebook"]["embed"]
    assert float(jnp.abs(embed).max()) <= math.sqrt(6 / 4)           # Kaiming uniform
    codes = model.apply(variables, x, method="encode")
    decoded = model.apply(variables, codes, method="decode")
    out = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(np.asarray(out.codes[..., 0]), np.asarray(codes))
    np.testing.assert_array_equal(np.asarray(out.quantized), np.asarray(decoded))
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(embed[codes]))
    with pytest.raises(ValueError, match="code 9"):
        model.apply(variables, jnp.full((1, 2), 9), method="decode")


# ----------------------------------------------------------------------------- saved k-means
# models: atomic saves to the exact path, fingerprints of what they were fitted on


@pytest.mark.parametrize("kind", ["kmeans", "residual"])
def test_kmeans_models_save_atomically_and_check_the_encoder_fingerprint(kind, tmp_path,
                                                                        monkeypatch):
    from audiolm_jax.files import FingerprintMismatchError
    from audiolm_jax.quantization.minibatch_kmeans import KMeansModel
    from audiolm_jax.quantization.residual_kmeans import ResidualKMeans

    rng = np.random.default_rng(0)
    if kind == "kmeans":
        cls, array = KMeansModel, rng.standard_normal((4, 3)).astype(np.float32)
    else:
        cls, array = ResidualKMeans, rng.standard_normal((2, 4, 3)).astype(np.float32)
    model = cls(array, {"layer": 1, "encoder_fingerprint": "aaaaaaaaaaaaaaaa"})
    # Exactly the path given (np.savez would have appended ".npz"), nothing else left.
    path = model.save(tmp_path / "model.bin")
    assert path == tmp_path / "model.bin" and sorted(tmp_path.iterdir()) == [path]
    loaded = cls.load(path, encoder_fingerprint="aaaaaaaaaaaaaaaa")
    assert loaded.metadata == model.metadata and loaded.fingerprint == model.fingerprint
    assert len(model.fingerprint) == 16
    assert cls(array + 1e-3, model.metadata).fingerprint != model.fingerprint
    with pytest.raises(FingerprintMismatchError) as info:
        cls.load(path, encoder_fingerprint="bbbbbbbbbbbbbbbb")
    assert "aaaaaaaaaaaaaaaa" in str(info.value) and "bbbbbbbbbbbbbbbb" in str(info.value)
    assert "model.bin" in str(info.value)
    cls.load(path, encoder_fingerprint="bbbbbbbbbbbbbbbb", force=True)
    # Saved before fingerprints: accepted.
    cls(array, {"layer": 1}).save(tmp_path / "old.npz")
    cls.load(tmp_path / "old.npz", encoder_fingerprint="bbbbbbbbbbbbbbbb")
    # A save that fails half-way leaves the previous file whole and no temporary file.
    def broken(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        cls(array + 1, {"layer": 2}).save(path)
    assert cls.load(path).metadata["layer"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "old.npz"]
