"""Multi-stream token LMs: the three stream layouts convert exactly, `generate_streams`
over `StreamDecoder`'s KV cache equals greedy decoding by full recompute in each
layout, rows pad after EOS, a tiny decoder learns a fixed batch, and the sliding
window equals a manual re-prefill of the last frames."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from audiolm_jax.layers.streams import StreamDecoder, StreamLayout, place_after
from audiolm_jax.sampling.streams import (
    allowed_codes,
    generate_streams,
    generate_windowed,
    stream_fns,
)
from audiolm_jax.training import mesh as mesh_lib

K, C, BATCH, PREFIX = 3, 8, 2, 3
LAYOUTS = {
    "flattened": StreamLayout("flattened", K, C, book_offsets=(4, 12, 20)),
    "delayed": StreamLayout("delayed", K, C),
    "parallel": StreamLayout("parallel", K, C),
}
EOS = C + 1                                        # delayed / parallel: the second special id
VOCAB = {"flattened": 30, "delayed": C + 2, "parallel": C + 2}


def build(kind, **kw):
    """A tiny decoder for `kind`; flattened prefix ids live in [0, 4) of its vocabulary."""
    kw = dict(dict(embed_dim=16, num_layers=1, num_heads=2, head_dim=8, mlp_dim=32), **kw)
    return StreamDecoder(LAYOUTS[kind], VOCAB[kind], prefix_vocab_size=4, **kw)


@pytest.fixture(scope="module")
def models():
    """kind -> (model, peaked params): the head scaled up so greedy margins are wide."""
    out = {}
    for kind in LAYOUTS:
        model = build(kind)
        codes = jnp.zeros((BATCH, 2, K), jnp.int32)
        params = nn.unbox(model.init(jax.random.key(0), codes, jnp.zeros((BATCH, PREFIX),
                                                                         jnp.int32))["params"])
        params["decoder"]["logits"] = params["decoder"]["logits"] * 8.0
        out[kind] = (model, params)
    return out


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_layouts_convert_exactly(kind):
    layout = LAYOUTS[kind]
    codes = jax.random.randint(jax.random.key(1), (BATCH, 5, K), 0, C)
    seq = layout.to_sequence(codes)
    assert seq.shape == (BATCH, layout.sequence_length(5), layout.heads)
    np.testing.assert_array_equal(layout.from_sequence(seq), codes)
    np.testing.assert_array_equal(layout.to_sequence(layout.from_sequence(seq)), seq)
    frames, books = layout.step_frames(4)                     # who sits at step 4
    for f, b, h in zip(np.asarray(frames), np.asarray(books), range(layout.heads), strict=True):
        want = layout.pad if f < 0 else int(codes[0, f, b]) + layout.offsets[b]
        assert int(seq[0, 4, h]) == want
    if kind == "flattened":
        assert layout.with_prefix(jnp.zeros((BATCH, 2), jnp.int32), codes).shape == (BATCH, 17)
    else:
        custom = StreamLayout("delayed", K, C, delays=(0, 2, 1))
        np.testing.assert_array_equal(custom.from_sequence(custom.to_sequence(codes)), codes)


def test_place_after_joins_ragged_rows():
    prefix = jnp.array([[1, 2, 0], [3, 0, 0]])
    out = place_after(prefix, jnp.array([2, 1]), jnp.array([[7, 8], [9, 6]]))
    np.testing.assert_array_equal(out[0, :4], [1, 2, 7, 8])
    np.testing.assert_array_equal(out[1, :3], [3, 9, 6])


def greedy_by_recompute(model, params, layout, prefix, prompt, frames, eos_id=None):
    """Greedy decoding without a cache: every step prefills [prefix; steps so far] from
    scratch, then the same per-step rules as `generate_streams`."""
    t0 = prompt.shape[1]
    seq = np.array(layout.to_sequence(jnp.pad(prompt, ((0, 0), (0, frames), (0, 0)),
                                                constant_values=layout.pad)))
    end = np.full((BATCH,), t0 + frames)
    prefill = jax.jit(lambda p, steps: model.apply(
        {"params": params, "cache": model.init_cache(BATCH, p.shape[1] + steps.shape[1])},
        p, None, steps, method=StreamDecoder.prefill, mutable=["cache"])[0])
    for s in range(layout.known_steps(t0), layout.sequence_length(t0 + frames)):
        logits = prefill(prefix, jnp.asarray(seq[:, :s]))
        frame, book = (np.asarray(a) for a in layout.step_frames(s))
        masked = allowed_codes(layout, logits, jnp.asarray(book), eos_id)
        top2 = np.sort(np.asarray(masked), axis=-1)[..., -2:]
        assert (top2[..., 1] - top2[..., 0] > 1e-3).all(), "near-tie: compare elsewhere"
        token = np.asarray(jnp.argmax(masked, axis=-1))
        for b in range(BATCH):
            if eos_id is not None and frame[0] >= t0 and frame[0] < end[b] and book[0] == 0 \
                    and token[b, 0] == eos_id:
                end[b] = frame[0]
            for h in range(layout.heads):
                if frame[h] >= t0:
                    valid = 0 <= frame[h] < end[b]
                    seq[b, s, h] = token[b, h] if valid else layout.pad
    return seq, end - t0


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_cached_greedy_equals_recompute(models, kind):
    model, params = models[kind]
    layout = model.layout
    prefix = jnp.array([[1, 2, 3], [3, 0, 2]], jnp.int32)
    prompt = jax.random.randint(jax.random.key(3), (BATCH, 2, K), 0, C)
    frames = 4
    cache = model.init_cache(BATCH, PREFIX + layout.sequence_length(2 + frames))
    prefill_fn, step_fn = stream_fns(model, params)
    out = jax.jit(lambda c, p, q: generate_streams(prefill_fn, step_fn, c, layout, p, None,
                                                   frames, jax.random.key(0), prompt=q,
                                                   temperature=0.0))(cache, prefix, prompt)
    seq, lengths = greedy_by_recompute(model, params, layout, prefix, prompt, frames)
    want = np.asarray(layout.from_sequence(jnp.asarray(seq)))[:, 2:]
    np.testing.assert_array_equal(out.codes, want)
    np.testing.assert_array_equal(out.lengths, lengths)
    # Teacher forcing reads the same logits: each greedy code is its own argmax.
    full = jnp.concatenate([prompt, out.codes], axis=1)
    logits = model.apply({"params": params}, full, prefix)[:, 2:]             # [b, t, K, V]
    offsets = np.asarray(layout.offsets)
    ids = np.arange(logits.shape[-1])
    keep = (ids >= offsets[:, None]) & (ids < offsets[:, None] + C)           # [K, V]
    picked = np.argmax(np.where(keep, np.asarray(logits), -np.inf), axis=-1) - offsets
    np.testing.assert_array_equal(picked, out.codes)


@pytest.mark.parametrize("kind", ["flattened", "delayed"])
def test_rows_pad_after_eos(models, kind):
    model, params = models[kind]
    layout = model.layout
    eos = 2 if kind == "flattened" else EOS              # flattened: an id outside book ranges
    frames, batch = 8, BATCH
    prefix = jnp.array([[1, 2, 3], [3, 0, 2]], jnp.int32)

    def bias_eos(logits, step):                          # make EOS likely on book 0
        _, book = layout.step_frames(step)
        masked = allowed_codes(layout, logits, book, None)
        near_top = jnp.max(masked, axis=-1) - 0.5                       # [b, H]
        return masked.at[:, :, eos].set(jnp.where(book == 0, near_top, -jnp.inf))

    cache = model.init_cache(batch, PREFIX + layout.sequence_length(frames))
    prefill_fn, step_fn = stream_fns(model, params)
    out = jax.jit(lambda c, p, k: generate_streams(
        prefill_fn, step_fn, c, layout, p, None, frames, k, eos_id=eos, temperature=1.5,
        logits_fn=bias_eos))(cache, prefix, jax.random.key(4))
    codes, lengths = np.asarray(out.codes), np.asarray(out.lengths)
    assert (lengths < frames).all(), lengths             # every row ended early
    for b in range(batch):
        assert (codes[b, lengths[b]:] == layout.pad).all()
        assert ((codes[b, :lengths[b]] >= 0) & (codes[b, :lengths[b]] < C)).all()
    # Early exit: the loop stopped once the last row's EOS step (and, delayed, its
    # books' lagging codes) had run, well before the budget.
    steps, last = int(out.steps), layout.sequence_length(int(lengths.max()))
    assert last <= steps <= last + 1 < layout.sequence_length(frames)


def test_tiny_delayed_decoder_learns_a_fixed_batch():
    model = build("delayed", embed_dim=32, num_layers=2, mlp_dim=64)
    layout = model.layout
    codes = jax.random.randint(jax.random.key(5), (BATCH, 6, K), 0, C)
    prefix = jnp.arange(BATCH, dtype=jnp.int32)[:, None]                   # one id per row
    params = nn.unbox(model.init(jax.random.key(6), codes, prefix)["params"])
    tx = optax.adam(1e-2)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, opt = carry
            def loss_fn(p):
                logits = model.apply({"params": p}, codes, prefix)
                return optax.softmax_cross_entropy_with_integer_labels(logits, codes).mean()
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt = tx.update(grads, opt)
            return (optax.apply_updates(params, updates), opt), loss
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=150)
        return params, losses

    params, losses = train(params)
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    cache = model.init_cache(BATCH, 1 + layout.sequence_length(6))
    prefill_fn, step_fn = stream_fns(model, params)
    out = generate_streams(prefill_fn, step_fn, cache, layout, prefix, None, 6,
                           jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(out.codes, codes)


def test_sliding_window_equals_a_manual_reprefill(models):
    """Learned positions over 3 + 2 * (4 + 3) = 17 slots: 10 frames (33 positions) do not
    fit, windows of 3 new frames after at most 4 history frames do."""
    kind, history, window, total = "parallel", 4, 3, 10
    layout = LAYOUTS[kind]
    width = PREFIX + layout.sequence_length(history + window)
    model = build(kind, position_embedding="learned", max_length=width)
    prefix = jnp.array([[1, 2, 3], [3, 0, 2]], jnp.int32)
    params = nn.unbox(model.init(jax.random.key(7), jnp.zeros((BATCH, 2, K), jnp.int32),
                                 prefix)["params"])
    params["decoder"]["logits"] = params["decoder"]["logits"] * 8.0
    prefill_fn, step_fn = stream_fns(model, params)

    @jax.jit
    def run(hist, real):
        return generate_streams(prefill_fn, step_fn, model.init_cache(BATCH, width), layout,
                                prefix, None, window, jax.random.key(0), prompt=hist,
                                prompt_frames=real, temperature=0.0)

    def run_window(w, done, hist, real):
        out = run(jnp.asarray(hist), real)
        return out.codes, out.lengths

    prompt = np.asarray(jax.random.randint(jax.random.key(8), (BATCH, 2, K), 0, C))
    codes, lengths = generate_windowed(run_window, prompt, total, window, history, layout.pad)
    assert codes.shape == (BATCH, total, K) and (lengths == total).all()
    assert run._cache_size() == 1                           # one program for every window
    # Window 2 by hand: the last 4 frames before it, unpadded, in a fresh cache.
    frames = np.concatenate([prompt, codes], axis=1)
    manual = generate_streams(prefill_fn, step_fn,
                              model.init_cache(BATCH, width), layout, prefix, None, window,
                              jax.random.key(0), prompt=jnp.asarray(frames[:, 2 + 6 - 4:2 + 6]),
                              temperature=0.0)
    np.testing.assert_array_equal(manual.codes, codes[:, 6:9])


def test_non_causal_variant_reads_both_ways():
    model = build("parallel", causal=False)
    codes = jax.random.randint(jax.random.key(9), (BATCH, 4, K), 0, C)
    prefix = jnp.zeros((BATCH, 1), jnp.int32)
    params = model.init(jax.random.key(0), codes, prefix)["params"]
    a = model.apply({"params": params}, codes, prefix)
    b = model.apply({"params": params}, codes.at[:, -1].set((codes[:, -1] + 1) % C), prefix)
    assert a.shape == (BATCH, 4, K, VOCAB["parallel"])
    assert not np.allclose(a[:, 0], b[:, 0])                # frame 0 sees the last frame


@pytest.mark.parametrize("kind", ["flattened", "delayed"])
def test_params_and_cache_have_mapped_logical_axes(kind):
    from jax.sharding import PartitionSpec
    model = build(kind)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, K), jnp.int32),
                                              jnp.zeros((1, 1), jnp.int32))["params"])
    specs = [nn.get_partition_spec(boxed), nn.get_partition_spec(model.init_cache(1, 8))]
    names = set()
    for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)):
        assert isinstance(spec, PartitionSpec), spec                  # every leaf annotated
        names |= {n for n in spec if n is not None}
    assert names and names <= set(mesh_lib.LOGICAL_AXES), names - set(mesh_lib.LOGICAL_AXES)
    for rules in mesh_lib.RULE_SETS.values():
        assert names <= {n for n, _ in rules}
