"""Multi-codebook embedding, offset flattening, delay pattern and sinusoidal features."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.layers.embeddings import (
    MultiCodebookEmbedding,
    TimestepEmbedding,
    apply_delay_pattern,
    codebook_offsets,
    delay_mask,
    flatten_with_offsets,
    revert_delay_pattern,
    sinusoidal_embedding,
    timestep_embedding,
    unflatten_with_offsets,
)


def test_multi_codebook_embedding_is_sum_of_tables():
    module = MultiCodebookEmbedding(num_codebooks=3, codebook_size=5, embed_dim=4,
                                    num_special_tokens=2)
    codes = jax.random.randint(jax.random.key(0), (2, 6, 3), 0, 7)
    variables = module.init(jax.random.key(1), codes)
    boxed = variables["params"]["embedding"]
    assert isinstance(boxed, nn.LogicallyPartitioned)
    assert boxed.names == ("codebooks", "vocab", "embed")
    table = np.asarray(nn.unbox(variables)["params"]["embedding"])
    assert table.shape == (3, 7, 4)
    out = np.asarray(module.apply(variables, codes))
    assert out.shape == (2, 6, 4)
    c = np.asarray(codes)
    expected = table[0][c[..., 0]] + table[1][c[..., 1]] + table[2][c[..., 2]]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert module.special_id(1) == 6

    # Absent tokens contribute nothing, per token or per frame.
    mask = np.ones((2, 6, 3), bool)
    mask[0, 1, 2] = False
    out = np.asarray(module.apply(variables, codes, mask=jnp.asarray(mask)))
    np.testing.assert_allclose(out[0, 1], table[0][c[0, 1, 0]] + table[1][c[0, 1, 1]],
                               rtol=1e-6, atol=1e-6)
    frame_mask = np.ones((2, 6), bool)
    frame_mask[1, 4:] = False
    out = np.asarray(module.apply(variables, codes, mask=jnp.asarray(frame_mask)))
    assert np.all(out[1, 4:] == 0) and np.allclose(out[1, :4], expected[1, :4], atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_flatten_with_offsets_roundtrip(k):
    codes = jax.random.randint(jax.random.key(k), (3, 5, k), 0, 11)
    flat = flatten_with_offsets(codes, 11)
    assert flat.shape == (3, 5 * k)
    np.testing.assert_array_equal(unflatten_with_offsets(flat, k, 11), codes)
    np.testing.assert_array_equal(codebook_offsets(k, 11), 11 * np.arange(k))
    # Frame-major: flat[t * k + q] = codes[t, q] + q * size.
    c = np.asarray(codes)
    assert int(flat[1, 2 * k + (k - 1)]) == c[1, 2, k - 1] + (k - 1) * 11
    assert int(flat.max()) < k * 11


def test_delay_pattern_layout():
    codes = jnp.array([[[1, 2, 3], [4, 5, 6]]])                  # [1, t=2, k=3]
    delayed = apply_delay_pattern(codes, pad_id=-1)
    expected = np.array([[1, -1, -1],
                         [4, 2, -1],
                         [-1, 5, 3],
                         [-1, -1, 6]])
    np.testing.assert_array_equal(delayed[0], expected)
    np.testing.assert_array_equal(delay_mask(2, 3), expected != -1)
    custom = apply_delay_pattern(codes, pad_id=0, delays=(0, 2, 1))
    np.testing.assert_array_equal(custom[0], [[1, 0, 0], [4, 0, 3], [0, 2, 6], [0, 5, 0]])
    np.testing.assert_array_equal(delay_mask(2, 3, (0, 2, 1)), np.asarray(custom[0]) != 0)
    # Per-row lengths: frames past a row's length are padding too.
    lengths_mask = delay_mask(2, 3, lengths=jnp.array([2, 1]))
    assert lengths_mask.shape == (2, 4, 3)
    np.testing.assert_array_equal(lengths_mask[0], expected != -1)
    np.testing.assert_array_equal(lengths_mask[1], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize("k,delays", [(1, None), (3, None), (4, None), (4, (0, 3, 1, 1))])
def test_delay_pattern_roundtrip(k, delays):
    codes = jax.random.randint(jax.random.key(k), (2, 7, k), 0, 50)
    delayed = jax.jit(lambda c: apply_delay_pattern(c, 99, delays))(codes)
    max_delay = k - 1 if delays is None else max(delays)
    assert delayed.shape == (2, 7 + max_delay, k)
    np.testing.assert_array_equal(revert_delay_pattern(delayed, delays), codes)
    mask = np.asarray(delay_mask(7, k, delays))
    assert np.all(np.asarray(delayed)[:, ~mask] == 99)
    assert mask.sum() == 7 * k


def test_sinusoidal_embedding_values():
    emb = sinusoidal_embedding(jnp.array([0.0, 1.0, 2.5]), 8, max_period=10_000.0)
    assert emb.shape == (3, 8)
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
    freqs = 10_000.0 ** (-np.arange(4) / 4)                       # 1, 0.1, 0.01, 0.001
    np.testing.assert_allclose(freqs, [1, 0.1, 0.01, 0.001], rtol=1e-12)
    np.testing.assert_allclose(emb[1, 0], math.sin(1.0), rtol=1e-6)
    np.testing.assert_allclose(emb[1, 4], math.cos(1.0), rtol=1e-6)
    np.testing.assert_allclose(emb[2], np.concatenate([np.sin(2.5 * freqs), np.cos(2.5 * freqs)]),
                               rtol=1e-5, atol=1e-6)
    # Leading dims and odd widths.
    odd = sinusoidal_embedding(jnp.ones((2, 3)), 5)
    assert odd.shape == (2, 3, 5) and np.all(odd[..., -1] == 0)
    np.testing.assert_allclose(timestep_embedding(jnp.array([0.5]), 8),
                               sinusoidal_embedding(jnp.array([500.0]), 8), rtol=1e-6)


def test_timestep_embedding_module():
    module = TimestepEmbedding(embed_dim=16, frequency_dim=32, hidden_dim=24)
    t = jnp.array([0.0, 0.3, 1.0])
    variables = module.init(jax.random.key(0), t)
    names = jax.tree.map(lambda b: b.names, variables["params"],
                         is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert names["dense_in"]["kernel"] == (None, "mlp")
    assert names["dense_out"]["kernel"] == ("mlp", "embed")
    out = module.apply(variables, t)
    assert out.shape == (3, 16) and bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(out[0], out[1])
