"""A tiny causal codec with random weights for the codec streaming and CLI tests.

Variables are drawn with numpy from the shapes of an abstract init: `init_codec`
compiles the whole init with XLA, which costs more than every other step of
these tests on a 2-core CPU, and random weights are all the tests need.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from audiolm_jax.models.codec.model import Codec, CodecConfig
from audiolm_jax.models.codec.seanet import SEANetConfig

# hop 4 (one stride-4 conv, a one-layer LSTM, reflect padding), 2000 frames/s,
# 16 codes = 4 bits: 8 kbps per codebook, 4 codebooks at 32 kbps.
TINY = CodecConfig(
    seanet=SEANetConfig(num_filters=4, upsampling_ratios=(4,), hidden_size=8,
                        num_lstm_layers=1),
    sample_rate=8000, codebook_size=16, target_bandwidths=(8.0, 16.0, 32.0))

LATENT_SCALE = 0.3
"""About the spread of TINY's latents for audio of RMS ~0.3 with `random_variables`."""


def random_variables(config: CodecConfig, seed: int = 0,
                     latent_scale: float = LATENT_SCALE) -> dict:
    """{"params", "codebook"} of the right shapes, random but well scaled.

    Conv gains are ~1 (weight norm makes each filter unit-norm), biases and
    LSTM weights small, and codebook vectors normal with standard deviation
    `latent_scale` halved per residual layer, so codes spread over the codebooks.
    """
    model = Codec(config)
    dummy = jax.ShapeDtypeStruct((1, config.hop_length * 4, config.seanet.audio_channels),
                                 jnp.float32)
    shapes = nn.meta.unbox(jax.eval_shape(
        lambda key, x: model.init(key, x, train=False), jax.random.key(0), dummy))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        normal = rng.standard_normal(leaf.shape).astype(np.float32)
        if "weight_g" in name:
            return np.abs(normal) * 0.3 + 0.8
        if "bias" in name:
            return 0.05 * normal
        if "weight_hh" in name or "weight_ih" in name:
            return normal / np.sqrt(leaf.shape[0])
        return normal

    params = jax.tree_util.tree_map_with_path(draw, shapes["params"])
    codebook = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["codebook"])
    for i, layer in enumerate(codebook["quantizer"].values()):
        layer["embed"] = (latent_scale * 0.5**i
                          * rng.standard_normal(layer["embed"].shape)).astype(np.float32)
        layer["embed_avg"] = layer["embed"].copy()
        layer["cluster_size"] = np.ones_like(layer["cluster_size"])
        layer["initialized"] = np.ones_like(layer["initialized"])
    return {"params": params, "codebook": codebook}


def make_signal(num_samples: int, sample_rate: int, channels: int = 1,
                seed: int = 0) -> np.ndarray:
    """[num_samples, channels] float32: two partials with vibrato plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    tone = (0.25 * np.sin(2 * np.pi * 300 * t + 3 * np.sin(2 * np.pi * 5 * t))
            + 0.1 * np.sin(2 * np.pi * 1100 * t))
    x = tone[:, None] + 0.03 * rng.standard_normal((num_samples, channels))
    return x.astype(np.float32)
