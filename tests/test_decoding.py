"""The shared decoding core end to end: `sampling.generate` over `layers.Decoder`'s
KV cache, with ragged prompts and EOS, equals greedy decoding by recomputing the
full sequence at every step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.layers.decoder import Decoder
from audiolm_jax.sampling import generate

VOCAB, BATCH, PROMPT, NEW, EOS = 32, 4, 5, 6, 3
LENGTHS = np.array([5, 2, 4, 1], np.int32)


def test_generate_over_the_kv_cache_equals_full_recompute():
    model = Decoder(vocab_size=VOCAB, embed_dim=32, num_layers=2, num_heads=4, head_dim=8,
                    mlp_dim=64)
    prompt = np.asarray(jax.random.randint(jax.random.key(1), (BATCH, PROMPT), 4, VOCAB),
                        np.int32)
    params = nn.unbox(model.init(jax.random.key(0), jnp.asarray(prompt))["params"])
    cache = nn.unbox(model.init_cache(BATCH, PROMPT + NEW))

    def step_fn(cache, tokens, positions):
        logits, v = model.apply({"params": params, "cache": cache}, tokens, positions,
                                method=Decoder.decode, mutable=["cache"])
        return logits[:, 0], v["cache"]

    run = jax.jit(lambda c, p, n, k: generate(step_fn, c, p, n, NEW, k, eos_id=EOS,
                                              temperature=0.0))
    out = run(cache, jnp.asarray(prompt), jnp.asarray(LENGTHS), jax.random.key(2))
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)

    # One jit of the full forward pass (retraced per sequence length) instead of
    # op-by-op dispatch: the same computation, compiled once per length.
    forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
    for b in range(BATCH):                       # greedy by full recompute, row by row
        seq = list(prompt[b, :LENGTHS[b]])
        while len(seq) < LENGTHS[b] + NEW:
            logits = forward(jnp.asarray([seq]))
            seq.append(int(jnp.argmax(logits[0, -1])))
            if seq[-1] == EOS:
                break
        assert lengths[b] == len(seq), b
        np.testing.assert_array_equal(tokens[b, :len(seq)], seq)
        assert (tokens[b, len(seq):] == 0).all()             # pad after the row's end
