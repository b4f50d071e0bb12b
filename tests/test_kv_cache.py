"""KV-cache decoding: a prefill of the prompt and then one token per step gives the
full-sequence logits (causal and prefix-LM, ragged prompts, eager and jitted, on
one device and under FSDP / tensor-parallel rules with the cache really split),
and `MultiHeadAttention`'s plain call is unchanged."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.layers.attention import (
    MODE_PREFILL,
    MultiHeadAttention,
    rotary_embedding,
)
from audiolm_jax.layers.decoder import Decoder
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib

VOCAB, BATCH, TOTAL, MAX_LENGTH = 64, 8, 12, 16
ATOL = 1e-5
RAGGED = np.array([5, 8, 3, 8, 6, 4, 8, 7], np.int32)
PREFIX = np.array([2, 5, 3, 0, 6, 1, 4, 7], np.int32)    # <= RAGGED row by row


def small_model():
    return Decoder(vocab_size=VOCAB, embed_dim=32, num_layers=2, num_heads=4, head_dim=8,
                   mlp_dim=64)


@pytest.fixture(scope="module")
def setup():
    model = small_model()
    seq = np.asarray(jax.random.randint(jax.random.key(1), (BATCH, TOTAL), 0, VOCAB), np.int32)
    boxed = model.init(jax.random.key(0), jnp.asarray(seq))["params"]
    return model, boxed, nn.unbox(boxed), seq


def step_fns(model, jit):
    """Fresh (prefill, decode) functions: jit traces once per call of this, so a trace
    made under one mesh context is never reused under another."""

    def prefill(params, cache, tokens, lengths, prefix):
        logits, v = model.apply({"params": params, "cache": cache}, tokens, lengths, prefix,
                                method=Decoder.prefill, mutable=["cache"])
        return logits, v["cache"]

    def decode(params, cache, tokens):
        logits, v = model.apply({"params": params, "cache": cache}, tokens,
                                method=Decoder.decode, mutable=["cache"])
        return logits, v["cache"]

    return (jax.jit(prefill), jax.jit(decode)) if jit else (prefill, decode)


def generate(model, params, cache, seq, prompt_lengths, prefix=None, jit=True, put=None):
    """Prefills each row's first `prompt_lengths[b]` tokens (right-padded with junk
    that must not matter), then feeds the rest of the rows one token per step.

    Returns (prefill logits [b, P, V], decode logits [b, steps, V], final cache)."""
    prefill, decode = step_fns(model, jit)
    put = put or (lambda x: jnp.asarray(x))
    width = int(prompt_lengths.max())
    junk = (seq[:, :width] + 7) % VOCAB
    prompt = np.where(np.arange(width)[None] < prompt_lengths[:, None], seq[:, :width], junk)
    prefix = None if prefix is None else put(prefix)
    logits, cache = prefill(params, cache, put(prompt), put(prompt_lengths), prefix)
    steps = []
    for s in range(TOTAL - width):
        token = seq[np.arange(BATCH), prompt_lengths + s][:, None]
        step_logits, cache = decode(params, cache, put(token))
        steps.append(step_logits[:, 0])
    return np.asarray(logits), np.asarray(jnp.stack(steps, axis=1)), cache


def check_against_full(full, prefill_logits, decode_logits, prompt_lengths):
    for b, p in enumerate(prompt_lengths):
        np.testing.assert_allclose(prefill_logits[b, :p], full[b, :p], atol=ATOL, rtol=0,
                                   err_msg=f"prefill row {b}")
        steps = decode_logits.shape[1]
        np.testing.assert_allclose(decode_logits[b], full[b, p:p + steps], atol=ATOL, rtol=0,
                                   err_msg=f"decode row {b}")


CASES = {   # name: (prompt lengths, prefix lengths, jit)
    "equal_eager": (np.full(BATCH, 6, np.int32), None, False),
    "ragged_jit": (RAGGED, None, True),
    "prefix_lm_jit": (RAGGED, PREFIX, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cached_decoding_matches_full_sequence(setup, name):
    model, _, params, seq = setup
    prompt_lengths, prefix, jit = CASES[name]
    full = np.asarray(model.apply({"params": params}, jnp.asarray(seq), None,
                                  None if prefix is None else jnp.asarray(prefix)))
    cache = nn.unbox(model.init_cache(BATCH, MAX_LENGTH))
    prefill_logits, decode_logits, cache = generate(model, params, cache, seq, prompt_lengths,
                                                    prefix, jit=jit)
    check_against_full(full, prefill_logits, decode_logits, prompt_lengths)
    index = np.asarray(cache["layer_1"]["attn"]["cache_index"])
    np.testing.assert_array_equal(index, prompt_lengths + TOTAL - prompt_lengths.max())


def test_prefix_mask_changes_the_prefix_only(setup):
    """Prefix-LM differs from causal inside the prefix, and the cache reproduces it."""
    model, _, params, seq = setup
    causal = np.asarray(model.apply({"params": params}, jnp.asarray(seq)))
    prefix = np.asarray(model.apply({"params": params}, jnp.asarray(seq), None,
                                    jnp.asarray(PREFIX)))
    row = 1   # prefix 5: positions 0..3 see later prefix tokens
    assert np.abs(causal[row, :4] - prefix[row, :4]).max() > 1e-3
    row = 3   # prefix 0: plain causal
    np.testing.assert_allclose(causal[row], prefix[row], atol=ATOL)


def shard_shape(x):
    return x.addressable_shards[0].data.shape


MESHES = {   # name: (mesh shape, rules, expected per-device cached_key and cache_index shape)
    "fsdp": ((1, 8, 1), "fsdp", (1, MAX_LENGTH, 4, 8), (1,)),
    "tp": ((2, 1, 4), "tp", (4, MAX_LENGTH, 1, 8), (4,)),
}


@pytest.mark.parametrize("name", list(MESHES))
def test_sharded_decoding_matches_single_device(setup, name):
    model, boxed, params, seq = setup
    assert len(jax.devices()) == 8
    single = jax.devices()[0]
    ref_cache = jax.device_put(nn.unbox(model.init_cache(BATCH, MAX_LENGTH)), single)
    ref = generate(model, jax.device_put(params, single), ref_cache, seq, RAGGED, PREFIX,
                   put=lambda x: jax.device_put(jnp.asarray(x), single))

    shape, rules_name, key_shard, index_shard = MESHES[name]
    mesh = mesh_lib.create_mesh(shape)
    rules = mesh_lib.get_rules(rules_name)
    param_shardings = mesh_lib.fit_to_shapes(
        mesh_lib.logical_to_shardings(nn.get_partition_spec(boxed), mesh, rules), params)
    sharded_params = jax.device_put(params, param_shardings)
    cache, cache_shardings = state_lib.create_sharded_state(
        lambda: model.init_cache(BATCH, MAX_LENGTH), mesh, rules)
    key_sharding = cache_shardings["layer_0"]["attn"]["cached_key"]
    batch_axes = mesh_lib.BATCH_AXES
    expected_spec = (batch_axes, None, "tensor" if rules_name == "tp" else None, None)
    assert tuple(key_sharding.spec) + (None,) * (4 - len(key_sharding.spec)) == expected_spec
    assert shard_shape(cache["layer_0"]["attn"]["cached_key"]) == key_shard

    batch = mesh_lib.batch_sharding(mesh)
    with mesh_lib.sharding_context(mesh, rules):
        prefill_logits, decode_logits, cache = generate(
            model, sharded_params, cache, seq, RAGGED, PREFIX,
            put=lambda x: jax.device_put(jnp.asarray(x), batch))
    np.testing.assert_allclose(prefill_logits, ref[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(decode_logits, ref[1], atol=ATOL, rtol=0)
    # The cache that comes out of prefill + decode steps is still laid out by the rules.
    for layer in ("layer_0", "layer_1"):
        attn = cache[layer]["attn"]
        assert shard_shape(attn["cached_key"]) == key_shard
        assert shard_shape(attn["cached_value"]) == key_shard
        assert shard_shape(attn["cache_index"]) == index_shard
    np.testing.assert_allclose(np.asarray(cache["layer_0"]["attn"]["cached_key"]),
                               np.asarray(ref[2]["layer_0"]["attn"]["cached_key"]), atol=ATOL)


def test_cache_errors(setup):
    model, _, params, seq = setup
    with pytest.raises(ValueError, match="no KV cache"):
        model.apply({"params": params}, jnp.asarray(seq[:, :1]), method=Decoder.decode,
                    mutable=["cache"])
    cache = nn.unbox(model.init_cache(BATCH, 4))
    with pytest.raises(ValueError, match="does not fit"):
        model.apply({"params": params, "cache": cache}, jnp.asarray(seq[:, :6]),
                    method=Decoder.prefill, mutable=["cache"])
    attn = MultiHeadAttention(num_heads=4, head_dim=8, causal=False)
    with pytest.raises(ValueError, match="causal"):
        attn.init(jax.random.key(0), jnp.ones((2, 3, 32)), mode=MODE_PREFILL)


# The class as it was before the KV cache, verbatim: the reference for the regression test.
class LegacyMultiHeadAttention(nn.Module):
    num_heads: int
    head_dim: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None, positions=None):
        batch, length, embed = x.shape
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0,
                                                out_axis=(1, 2, 3))
        w_qkv = self.param("qkv", nn.with_logical_partitioning(init, ("embed", None, "heads", "kv")),
                           (embed, 3, self.num_heads, self.head_dim), jnp.float32)
        qkv = jnp.einsum("ble,ethd->blthd", x.astype(self.dtype), w_qkv.astype(self.dtype))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length)[None], (batch, length))
        q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
        key_mask = None if mask is None else mask[:, None, None, :]
        out = jax.nn.dot_product_attention(q, k, v, mask=key_mask, is_causal=self.causal)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        out_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(0, 1),
                                                    out_axis=2)
        w_out = self.param("out", nn.with_logical_partitioning(out_init, ("heads", "kv", "embed")),
                           (self.num_heads, self.head_dim, embed), jnp.float32)
        return jnp.einsum("blhd,hde->ble", out, w_out.astype(self.dtype))


@pytest.mark.parametrize("causal", [False, True])
def test_plain_attention_unchanged(causal):
    x = jax.random.normal(jax.random.key(2), (3, 7, 32))
    mask = jnp.arange(7)[None] < jnp.array([7, 5, 2])[:, None]
    positions = jnp.array([[3, 4, 5, 6, 7, 8, 9]] * 3)
    new, old = MultiHeadAttention(4, 8, causal), LegacyMultiHeadAttention(4, 8, causal)
    variables = new.init(jax.random.key(3), x, mask)
    legacy_variables = old.init(jax.random.key(3), x, mask)
    assert set(variables) == {"params"}     # no cache outside the cached modes
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, legacy_variables)
    for leaf, legacy_leaf in zip(jax.tree.leaves(variables), jax.tree.leaves(legacy_variables)):
        np.testing.assert_array_equal(leaf, legacy_leaf)      # same initializers, same names
    for args in [(x,), (x, mask), (x, mask, positions)]:
        np.testing.assert_array_equal(new.apply(variables, *args), old.apply(variables, *args))

