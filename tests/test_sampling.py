"""Logits processors, `sample_token` and `generate`, all under jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.sampling.autoregressive import generate
from audiolm_jax.sampling.logits import (
    apply_temperature,
    classifier_free_guidance,
    min_p_filter,
    process_logits,
    repetition_penalty,
    sample_token,
    top_k_filter,
    top_p_filter,
)

# Probabilities 0.5, 0.2, 0.15, 0.1, 0.05, shuffled so sorting matters.
PROBS = np.array([0.1, 0.5, 0.05, 0.2, 0.15])
LOGITS = jnp.asarray(np.log(PROBS)[None] + 3.0, jnp.float32)      # arbitrary offset


def kept(logits):
    return set(np.flatnonzero(np.isfinite(np.asarray(logits)[0])).tolist())


def test_top_k_keeps_exactly_k():
    f = jax.jit(top_k_filter, static_argnums=1)
    x = jax.random.normal(jax.random.key(0), (4, 32))
    for k in (1, 5, 31):
        out = np.asarray(f(x, k))
        assert np.all(np.isfinite(out).sum(-1) == k)
        top = np.sort(np.asarray(x), -1)[:, -k:]
        np.testing.assert_allclose(np.sort(np.where(np.isfinite(out), out, -1e9), -1)[:, -k:], top)
    np.testing.assert_array_equal(f(x, 0), x)                      # 0 disables
    ties = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    assert np.isfinite(np.asarray(f(ties, 2))).sum() == 2          # exact even with ties


def test_top_p_smallest_set():
    f = jax.jit(top_p_filter)
    assert kept(f(LOGITS, 0.75)) == {1, 3, 4}        # 0.5 + 0.2 = 0.7 < 0.75 <= 0.85
    assert kept(f(LOGITS, 0.6)) == {1, 3}             # 0.5 < 0.6 <= 0.7
    assert kept(f(LOGITS, 0.3)) == {1}
    assert kept(f(LOGITS, 0.0)) == {1}                # always at least one token
    assert kept(f(LOGITS, 1.0)) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(f(LOGITS, 0.75)[0, 1], LOGITS[0, 1])   # kept values unchanged
    per_row = f(jnp.concatenate([LOGITS, LOGITS]), jnp.array([0.3, 1.0]))
    assert np.isfinite(np.asarray(per_row)).sum(-1).tolist() == [1, 5]


def test_min_p():
    f = jax.jit(min_p_filter)
    assert kept(f(LOGITS, 0.35)) == {1, 3}            # threshold 0.175
    assert kept(f(LOGITS, 0.19)) == {1, 3, 4, 0}      # threshold 0.095
    assert kept(f(LOGITS, 0.0)) == {0, 1, 2, 3, 4}
    assert kept(f(LOGITS, 1.0)) == {1}


def test_temperature_zero_is_argmax():
    x = jax.random.normal(jax.random.key(1), (16, 50))
    sample = jax.jit(sample_token, static_argnames="top_k")
    for seed in range(3):
        np.testing.assert_array_equal(sample(jax.random.key(seed), x, 0.0, top_k=5, top_p=0.9),
                                      jnp.argmax(x, -1))
    greedy = jax.jit(apply_temperature)(x, 0.0)
    assert np.all(np.isfinite(np.asarray(greedy)).sum(-1) == 1)
    # Per-row temperatures: row 0 greedy, row 1 sampled.
    out = sample(jax.random.key(0), x[:2], jnp.array([0.0, 1.0]))
    assert out.dtype == jnp.int32 and out.shape == (2,) and int(out[0]) == int(jnp.argmax(x[0]))
    np.testing.assert_allclose(apply_temperature(x, 2.0), x / 2.0, rtol=1e-6)


def test_repetition_penalty_example():
    logits = jnp.array([[2.0, -1.0, 0.5, 3.0, 1.0]])
    history = jnp.array([[0, 1, 1, 3, -1, 7]])                     # -1 / 7: out of range, ignored
    mask = jnp.array([[True, True, True, False, True, True]])      # token 3 is not valid history
    out = jax.jit(repetition_penalty)(logits, history, 2.0, mask)
    np.testing.assert_allclose(out, [[1.0, -2.0, 0.5, 3.0, 1.0]])
    np.testing.assert_array_equal(repetition_penalty(logits, history, 1.0), logits)


def test_classifier_free_guidance():
    key1, key2 = jax.random.split(jax.random.key(2))
    cond, uncond = jax.random.normal(key1, (3, 10)), jax.random.normal(key2, (3, 10)) + 5.0
    f = jax.jit(classifier_free_guidance)
    np.testing.assert_allclose(f(cond, uncond, 1.0), jax.nn.log_softmax(cond), atol=1e-5)
    np.testing.assert_allclose(jax.nn.softmax(f(cond, uncond, 1.0)), jax.nn.softmax(cond),
                               atol=1e-6)
    np.testing.assert_allclose(f(cond, uncond, 0.0), jax.nn.log_softmax(uncond), atol=1e-5)
    lc, lu = jax.nn.log_softmax(cond), jax.nn.log_softmax(uncond)
    np.testing.assert_allclose(f(cond, uncond, 3.0), lu + 3.0 * (lc - lu), atol=1e-5)
    masked = f(cond.at[0, 0].set(-jnp.inf), uncond, 3.0)
    assert np.isneginf(masked[0, 0]) and np.all(np.isfinite(np.asarray(masked)[:, 1:]))
    # transformers' mix (MusicGen): raw logits, per-row scales over [batch, heads, vocab].
    raw = classifier_free_guidance(cond[:, None], uncond[:, None], jnp.array([1.0, 2.0, 3.0]),
                                   space="logits")
    expected = uncond + jnp.array([1.0, 2.0, 3.0])[:, None] * (cond - uncond)
    np.testing.assert_allclose(raw[:, 0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="space"):
        classifier_free_guidance(cond, uncond, 2.0, space="probs")


def _chi_square(samples, probs):
    counts = np.bincount(np.asarray(samples), minlength=len(probs))
    assert counts[probs == 0].sum() == 0, "sampled a removed token"
    expected = probs[probs > 0] * len(samples)
    return float(((counts[probs > 0] - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("temperature,top_k,top_p,min_p", [
    (1.0, 0, 1.0, 0.0), (0.7, 0, 1.0, 0.0), (1.3, 3, 1.0, 0.0), (1.0, 0, 0.75, 0.0),
    (1.0, 0, 1.0, 0.35)])
def test_sampling_matches_softmax(temperature, top_k, top_p, min_p):
    n = 20_000
    logits = jnp.broadcast_to(LOGITS, (n, 5))
    sample = jax.jit(functools.partial(sample_token, temperature=temperature, top_k=top_k,
                                       top_p=top_p, min_p=min_p))
    samples = sample(jax.random.key(7), logits)
    # The reference distribution, computed independently in numpy.
    p = PROBS ** (1.0 / temperature)
    p = p / p.sum()
    order = np.argsort(-p)
    keep = np.ones(5, bool)
    if top_k:
        keep[order[top_k:]] = False
    if top_p < 1.0:
        mass_before = np.cumsum(p[order]) - p[order]
        keep[order[mass_before >= top_p]] = False
    if min_p > 0:
        keep &= p >= min_p * p.max()
    p = np.where(keep, p, 0.0)
    p = p / p.sum()
    np.testing.assert_allclose(jax.nn.softmax(process_logits(LOGITS, temperature, top_k, top_p,
                                                             min_p))[0], p, atol=1e-5)
    # 4 degrees of freedom at most: P(chi2 > 25) ~ 5e-5, while a 1%-off distribution
    # already gives chi2 ~ 20_000 * 0.01**2 / 0.05 ~ 40.
    assert _chi_square(samples, p) < 25.0


# ----------------------------------------------------------------------------- generate

VOCAB = 16


def successor_step(cache, tokens, positions):
    """A cache-free 'bigram model': the next token is (token + 1) % VOCAB, certainly.
    The cache counts calls per row."""
    logits = 10.0 * jax.nn.one_hot((tokens[:, 0] + 1) % VOCAB, VOCAB)
    return logits, cache + 1


def position_step(cache, tokens, positions):
    """Predicts its input position + 1: greedy output at position s is s."""
    return 10.0 * jax.nn.one_hot(positions[:, 0] + 1, VOCAB), cache


def _generate(step_fn, max_new_tokens, **kwargs):
    return jax.jit(functools.partial(generate, step_fn, max_new_tokens=max_new_tokens,
                                     **kwargs))


def test_generate_greedy_rows_continue_own_prompts():
    prompt = jnp.array([[5, 6, 7], [2, 0, 0], [9, 3, 0]])
    lengths = jnp.array([3, 1, 2])
    run = _generate(successor_step, 4, temperature=0.0, pad_id=0)
    out = run(jnp.zeros(3, jnp.int32), prompt, lengths, key=jax.random.key(0))
    np.testing.assert_array_equal(out.tokens, [[5, 6, 7, 8, 9, 10, 11],
                                               [2, 3, 4, 5, 6, 0, 0],
                                               [9, 3, 4, 5, 6, 7, 0]])
    np.testing.assert_array_equal(out.lengths, [7, 5, 6])
    assert int(out.steps) == 6                         # the 3-token row needs 2 + 4 steps


def test_generate_positions_and_prefill():
    prompt = jnp.array([[11, 12, 13, 14], [11, 0, 0, 0]])
    lengths = jnp.array([4, 1])
    expected = [[11, 12, 13, 14, 4, 5, 6], [11, 1, 2, 3, 0, 0, 0]]
    out = _generate(position_step, 3, temperature=0.0)(None, prompt, lengths,
                                                         key=jax.random.key(0))
    np.testing.assert_array_equal(out.tokens, expected)

    # With a (no-op) parallel prefill each row starts at its own last prompt token.
    seen = []

    def checking_step(cache, tokens, positions):
        seen.append(positions.shape)
        return position_step(cache, tokens, positions)

    out = _generate(checking_step, 3, temperature=0.0, prefill_fn=lambda c, p, n: c)(
        None, prompt, lengths, key=jax.random.key(0))
    np.testing.assert_array_equal(out.tokens, expected)
    assert int(out.steps) == 3 and seen == [(2, 1)]


def test_generate_eos_stops_and_pads_early():
    prompt = jnp.array([[1, 2], [12, 0], [5, 0]])
    lengths = jnp.array([2, 1, 1])
    run = _generate(successor_step, 8, temperature=0.0, eos_id=4, pad_id=15)
    out = run(jnp.zeros(3, jnp.int32), prompt, lengths, key=jax.random.key(0))
    np.testing.assert_array_equal(out.tokens[0], [1, 2, 3, 4] + [15] * 6)
    # 12 -> 13, 14, 15, 0, 1, 2, 3, 4 (EOS as the 8th and last new token).
    np.testing.assert_array_equal(out.tokens[1], [12, 13, 14, 15, 0, 1, 2, 3, 4, 15])
    np.testing.assert_array_equal(out.tokens[2], [5, 6, 7, 8, 9, 10, 11, 12, 13, 15])
    np.testing.assert_array_equal(out.lengths, [4, 9, 9])

    # Every row hits EOS quickly: the loop stops long before its 2 + 8 bound.
    out = run(jnp.zeros(3, jnp.int32), jnp.array([[1, 2], [2, 0], [3, 0]]), jnp.array([2, 1, 1]),
              key=jax.random.key(0))
    np.testing.assert_array_equal(out.tokens[:, :4], [[1, 2, 3, 4], [2, 3, 4, 15],
                                                     [3, 4, 15, 15]])
    assert np.all(np.asarray(out.tokens)[:, 4:] == 15)
    np.testing.assert_array_equal(out.lengths, [4, 3, 2])
    assert int(out.steps) == 3
    # The cache counted one call per step for every row.
    np.testing.assert_array_equal(out.cache, [3, 3, 3])


def test_generate_repetition_penalty_and_sampling():
    base = jnp.array([2.0, 1.0, 0.5, 0.4, -1.0])

    def constant_step(cache, tokens, positions):
        return jnp.broadcast_to(base, (tokens.shape[0], 5)), cache

    run = _generate(constant_step, 3, temperature=0.0, repetition_penalty=10.0)
    out = run(None, jnp.array([[3]]), jnp.array([1]), key=jax.random.key(0))
    # 0 wins, then is penalized to 0.2 -> 1, then 2 (the prompt's 3 is penalized to 0.04).
    np.testing.assert_array_equal(out.tokens, [[3, 0, 1, 2]])

    # Stochastic sampling under jit: deterministic per key, valid ids, prompts kept.
    noisy = lambda c, t, p: (successor_step(c, t, p)[0] * 0.1, c)
    run = _generate(noisy, 5, top_k=4, top_p=0.9)
    a = run(jnp.zeros(2, jnp.int32), jnp.array([[1, 2], [3, 0]]), jnp.array([2, 1]),
            key=jax.random.key(3))
    b = run(jnp.zeros(2, jnp.int32), jnp.array([[1, 2], [3, 0]]), jnp.array([2, 1]),
            key=jax.random.key(3))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.tokens.shape == (2, 7) and int(a.tokens.max()) < VOCAB
    np.testing.assert_array_equal(a.tokens[:, :1], [[1], [3]])
    assert int(a.tokens[0, 1]) == 2
