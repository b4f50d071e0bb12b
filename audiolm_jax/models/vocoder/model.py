"""Vocos: a ConvNeXt backbone over mel frames and an ISTFT head (Siuzdak, 2023).

A Vocos vocoder never upsamples in time. Each feature frame (a log-mel frame,
or the summed EnCodec codebook vectors of one code frame) becomes one STFT
frame: the backbone keeps the frame rate, the head predicts a log-magnitude
and a phase per frequency bin, and an inverse STFT with the feature hop turns
the frames into samples. That is why it is fast: the heavy layers run at
frame rate (94 frames/s at 24 kHz, hop 256), not at sample rate.

    features [b, t, c] -> Conv1d(7) -> (Ada)LayerNorm -> num_layers x ConvNeXt
        -> LayerNorm -> Dense(n_fft + 2) -> exp(log|S|), phase -> ISTFT -> [b, samples]

The layout and the numerics are those of the `vocos` package (its
`MelSpectrogramFeatures`, `VocosBackbone`, `ISTFTHead`), so its checkpoints
import one-to-one (`audiolm_jax.convert.vocos`) and its public `vocos-mel-24khz`
model is `VocosConfig()` (the defaults). Mel features are torchaudio's
`MelSpectrogram(power=1)` with its HTK mel scale and unnormalized filters, then
`log(max(mel, log_floor))` (vocos's 1e-7 by default; F5-TTS and the project's
Voicebox clamp at 1e-5): different from the project's librosa-style log-mel, and
a vocoder must be fed exactly the features it was trained on
(`mel_features(audio, config)` computes them inside `jit`;
`check_mel_settings` compares a generator's settings with a vocoder's).

Channels last: features `[batch, frames, channels]`; audio `[batch, samples]`
(Vocos is mono; `[batch, samples, 1]` is accepted where audio goes in).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiolm_jax.audio import griffin_lim, spectral
from audiolm_jax.checks import check_choice
from audiolm_jax.layers.linear import logical_dense

PADDINGS = ("center", "same")
FEATURES = ("mel", "encodec")
# `safe_log` of the vocos package: log(clip(x, min=1e-7)); the default `log_floor`.
LOG_FLOOR = 1e-7
# The head clips exp(log-magnitude) here so an untrained model cannot overflow.
MAX_MAGNITUDE = 100.0


@dataclasses.dataclass(frozen=True)
class VocosConfig:
    """A Vocos vocoder: its input features, ConvNeXt backbone and ISTFT head.

    The defaults are the public `vocos-mel-24khz` model (13.5 M params).

    Attributes:
      features: "mel" (log-mel of the audio, `mel_features`) or "encodec" (the sum
        of EnCodec codebook vectors, `Vocos.codes_to_features`; `vocos-encodec-24khz`).
      sample_rate: Hz.
      n_fft, hop_length: the mel STFT (window = n_fft, periodic Hann).
      n_mels: mel bands (the backbone's input channels for "mel").
      f_min, f_max: mel band edges in Hz (f_max None = Nyquist).
      log_floor: the mel magnitude is clamped here before the log, so silence
        reads `log(log_floor)`. A generator's features must use the same floor
        (`check_mel_settings`).
      padding: "center" (frames centred on `t * hop`, reflect-padded by n_fft // 2)
        or "same" (reflect-padded by (n_fft - hop) // 2 and uncentred, so T frames
        give exactly T * hop samples). Used by the mel front end and the head.
      num_codebooks, codebook_size, codebook_dim: "encodec" only: the codebook
        table the codes index (`codebook_dim` is the backbone's input channels).
      dim: backbone width.
      intermediate_dim: ConvNeXt MLP width.
      num_layers: ConvNeXt blocks.
      layer_scale_init_value: initial per-channel residual scale (None = 1 / num_layers).
      adanorm_num_embeddings: condition every LayerNorm on an integer id (the
        bandwidth of the EnCodec variant); None = plain LayerNorms.
      head_n_fft, head_hop_length: the ISTFT of the head (None = n_fft, hop_length).
    """

    features: str = "mel"
    sample_rate: int = 24_000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 100
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = LOG_FLOOR
    padding: str = "center"
    num_codebooks: int = 0
    codebook_size: int = 1024
    codebook_dim: int = 128
    dim: int = 512
    intermediate_dim: int = 1536
    num_layers: int = 8
    layer_scale_init_value: float | None = None
    adanorm_num_embeddings: int | None = None
    head_n_fft: int | None = None
    head_hop_length: int | None = None

    def __post_init__(self):
        check_choice("VocosConfig.features", self.features, FEATURES)
        check_choice("VocosConfig.padding", self.padding, PADDINGS)
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "dim", "intermediate_dim",
                     "num_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VocosConfig.{name} must be positive, got {getattr(self, name)}")
        if not self.log_floor > 0:
            raise ValueError(f"VocosConfig.log_floor must be positive, got {self.log_floor}")
        if self.features == "encodec" and self.num_codebooks <= 0:
            raise ValueError("VocosConfig: features='encodec' needs num_codebooks > 0")
        if self.padding == "same" and (self.istft_n_fft - self.istft_hop_length) % 2:
            raise ValueError(f"VocosConfig: padding='same' needs head_n_fft - head_hop_length "
                             f"even, got {self.istft_n_fft} - {self.istft_hop_length}")

    @property
    def input_channels(self) -> int:
        """Channels of one feature frame."""
        return self.n_mels if self.features == "mel" else self.codebook_dim

    @property
    def istft_n_fft(self) -> int:
        return self.head_n_fft or self.n_fft

    @property
    def istft_hop_length(self) -> int:
        return self.head_hop_length or self.hop_length

    @property
    def frame_rate(self) -> float:
        """Feature frames per second."""
        return self.sample_rate / self.istft_hop_length

    def num_samples(self, num_frames: int) -> int:
        """Samples decoded from `num_frames` feature frames."""
        if self.padding == "same":
            return num_frames * self.istft_hop_length
        return (num_frames - 1) * self.istft_hop_length

    def num_frames(self, num_samples: int) -> int:
        """Mel frames of `num_samples` samples."""
        if self.padding == "same":
            pad = (self.n_fft - self.hop_length) // 2 * 2
            return 1 + (num_samples + pad - self.n_fft) // self.hop_length
        return 1 + num_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocosConfig:
        """Inverse of `to_dict`; unknown fields are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VocosConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


# ----------------------------------------------------------------------------- features


def _mono(audio: jax.Array) -> jax.Array:
    """[batch, samples] or [batch, samples, 1] -> [batch, samples]."""
    if audio.ndim == 3:
        if audio.shape[-1] != 1:
            raise ValueError(f"Vocos is mono: got audio with {audio.shape[-1]} channels")
        return audio[..., 0]
    if audio.ndim != 2:
        raise ValueError(f"expected audio [batch, samples] or [batch, samples, 1], got shape "
                         f"{audio.shape}")
    return audio


def mel_features(audio: jax.Array, config: VocosConfig) -> jax.Array:
    """The log-mel frames a mel Vocos decodes (the `vocos` package's, in JAX).

    Args:
      audio: [batch, samples] (or [batch, samples, 1]) at `config.sample_rate`.
      config: the vocoder's settings.

    Returns:
      [batch, config.num_frames(samples), n_mels] float32 natural-log magnitudes.
    """
    if config.features != "mel":
        raise ValueError(f"mel_features needs a mel vocoder, this one reads {config.features!r}")
    return spectral.vocos_log_mel(_mono(audio), config.sample_rate, config.n_fft,
                                  config.hop_length, config.n_mels, config.f_min, config.f_max,
                                  config.padding, config.log_floor)


# The settings a generator's mel features must share with the vocoder that decodes them.
MEL_SETTINGS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "log_floor")


def check_mel_settings(config: VocosConfig, mel: Mapping[str, Any], what: str = "the features"
                       ) -> None:
    """Raises ValueError naming every mel setting of `mel` (a generator's `mel` block:
    sample_rate, n_fft, hop_length, n_mels and optionally f_min, f_max, log_floor,
    absent ones taking `VocosConfig`'s defaults) that differs from the vocoder's,
    both values shown."""
    defaults = VocosConfig()
    differ = []
    for name in MEL_SETTINGS:
        theirs = mel.get(name, getattr(defaults, name))
        ours = getattr(config, name)
        same = (theirs is None and ours is None) or (
            theirs is not None and ours is not None and float(theirs) == float(ours))
        if not same:
            differ.append(f"{name} {theirs} (vocoder: {ours})")
    if differ:
        raise ValueError(f"{what} and the vocoder disagree on the mel settings: "
                         + ", ".join(differ))


def istft(spec: jax.Array, config: VocosConfig) -> jax.Array:
    """The head's inverse STFT. [batch, frames, head_n_fft // 2 + 1] complex -> [batch, samples].

    "center" is `torch.istft(center=True)`; "same" is the `vocos` package's own
    ISTFT: overlap-add of every frame, `(n_fft - hop) // 2` samples cut from
    each end, then the window-envelope normalization.
    """
    n_fft, hop = config.istft_n_fft, config.istft_hop_length
    if config.padding == "center":
        return spectral.istft(spec, n_fft, hop, center=True)
    pad = (n_fft - hop) // 2
    y = spectral.istft(spec, n_fft, hop, center=False)
    return y[..., pad:y.shape[-1] - pad]


# ----------------------------------------------------------------------------- layers


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-6, dtype=dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale and shift are looked up by a condition id (Vocos's
    bandwidth conditioning). x: [b, t, d], cond: [] or [b] int -> [b, t, d]."""

    num_embeddings: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                                 (None, "embed")),
                           (self.num_embeddings, dim), jnp.float32)
        shift = self.param("shift", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                 (None, "embed")),
                           (self.num_embeddings, dim), jnp.float32)
        y = nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False, dtype=jnp.float32)(x)
        cond = jnp.asarray(cond, jnp.int32)
        s, b = scale[cond], shift[cond]
        if cond.ndim == 1:          # one id per row
            s, b = s[:, None], b[:, None]
        return (y * s + b).astype(self.dtype)


class _Norm(nn.Module):
    """LayerNorm, or AdaLayerNorm when the backbone is conditioned."""

    adanorm_num_embeddings: int | None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None) -> jax.Array:
        if self.adanorm_num_embeddings is None:
            return _layer_norm("layer_norm", self.dtype)(x)
        if cond is None:
            raise ValueError("this Vocos is conditioned (adanorm_num_embeddings set): pass "
                             "bandwidth_id")
        return AdaLayerNorm(self.adanorm_num_embeddings, self.dtype, name="ada_norm")(x, cond)


def depthwise_conv1d(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """'Same' depthwise convolution, `Conv1d(groups=channels, padding=k // 2)`.

    Args:
      x: [batch, time, channels].
      kernel: [width, channels] (odd width).
      bias: [channels].

    Computed as `width` shifted multiply-adds rather than a grouped convolution:
    with one channel per group the convolution is elementwise work anyway, and
    XLA:CPU runs (and differentiates) the grouped form far slower.
    """
    width = kernel.shape[0]
    half = width // 2
    padded = jnp.pad(x, ((0, 0), (half, half), (0, 0)))
    length = x.shape[1]
    y = sum(padded[:, k:k + length] * kernel[k] for k in range(width))
    return y + bias


class ConvNeXtBlock(nn.Module):
    """x + gamma * Dense(GELU(Dense(norm(dwconv7(x))))). [b, t, dim] -> [b, t, dim].

    Attributes:
      intermediate_dim: MLP width.
      layer_scale_init_value: gamma's initial value (<= 0: no gamma).
      adanorm_num_embeddings: see `VocosConfig`.
      dtype: compute dtype.
    """

    intermediate_dim: int
    layer_scale_init_value: float
    adanorm_num_embeddings: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        dim = x.shape[-1]
        init = nn.initializers.truncated_normal(0.02)
        kernel = self.param("dwconv_kernel", nn.with_logical_partitioning(init, (None, "embed")),
                            (7, dim), jnp.float32)
        bias = self.param("dwconv_bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                      ("embed",)),
                          (dim,), jnp.float32)
        h = depthwise_conv1d(x, kernel.astype(self.dtype), bias.astype(self.dtype))
        h = _Norm(self.adanorm_num_embeddings, self.dtype, name="norm")(h, cond)
        h = logical_dense(self.intermediate_dim, ("embed", "mlp"), "pwconv1", kernel_init=init,
                          dtype=self.dtype)(h)
        h = nn.with_logical_constraint(jax.nn.gelu(h, approximate=False),
                                       ("batch", "length", "mlp"))
        h = logical_dense(dim, ("mlp", "embed"), "pwconv2", kernel_init=init, dtype=self.dtype)(h)
        if self.layer_scale_init_value > 0:
            gamma = self.param("gamma", nn.with_logical_partitioning(
                nn.initializers.constant(self.layer_scale_init_value), ("embed",)),
                (dim,), jnp.float32)
            h = h * gamma.astype(self.dtype)
        return nn.with_logical_constraint(x + h, ("batch", "length", "embed"))


class Vocos(nn.Module):
    """The Vocos vocoder: features -> waveform.

    `apply(variables, features)` decodes; `mel_features(audio, config)` (a plain
    function) computes the features of a mel model; `codes_to_features` those of
    an EnCodec model.

    Attributes:
      config: the architecture.
      dtype: compute dtype of the backbone (params, the head's exp and the ISTFT
        stay float32).
    """

    config: VocosConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        init = nn.initializers.truncated_normal(0.02)
        self.embed_kernel = self.param("embed_kernel", nn.with_logical_partitioning(
            init, (None, None, "embed")), (7, cfg.input_channels, cfg.dim), jnp.float32)
        self.embed_bias = self.param("embed_bias", nn.with_logical_partitioning(
            nn.initializers.zeros, ("embed",)), (cfg.dim,), jnp.float32)
        self.norm = _Norm(cfg.adanorm_num_embeddings, self.dtype)
        scale = cfg.layer_scale_init_value or 1.0 / cfg.num_layers
        self.blocks = [ConvNeXtBlock(cfg.intermediate_dim, scale, cfg.adanorm_num_embeddings,
                                     self.dtype, name=f"convnext_{i}")
                       for i in range(cfg.num_layers)]
        self.final_layer_norm = _layer_norm("final_layer_norm", self.dtype)
        self.head = logical_dense(cfg.istft_n_fft + 2, ("embed", None), "head",
                                  kernel_init=nn.initializers.lecun_normal())
        if cfg.features == "encodec":
            self.codebook_weights = self.param(
                "codebook_weights", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                                 (None, "embed")),
                (cfg.num_codebooks * cfg.codebook_size, cfg.codebook_dim), jnp.float32)

    def backbone(self, features: jax.Array, bandwidth_id: jax.Array | None = None) -> jax.Array:
        """[batch, frames, input_channels] -> [batch, frames, dim] (after the final norm)."""
        cfg = self.config
        if features.ndim != 3 or features.shape[-1] != cfg.input_channels:
            raise ValueError(f"expected features [batch, frames, {cfg.input_channels}], got shape "
                             f"{features.shape}")
        x = jnp.pad(features.astype(self.dtype), ((0, 0), (3, 3), (0, 0)))
        x = jax.lax.conv_general_dilated(x, self.embed_kernel.astype(self.dtype), (1,), "VALID",
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        x = x + self.embed_bias.astype(self.dtype)
        x = nn.with_logical_constraint(self.norm(x, bandwidth_id), ("batch", "length", "embed"))
        for block in self.blocks:
            x = block(x, bandwidth_id)
        return self.final_layer_norm(x)

    def spectrum(self, features: jax.Array, bandwidth_id: jax.Array | None = None) -> jax.Array:
        """The head's complex STFT. -> [batch, frames, head_n_fft // 2 + 1] complex64."""
        x = self.head(self.backbone(features, bandwidth_id).astype(jnp.float32))
        log_magnitude, phase = jnp.split(x.astype(jnp.float32), 2, axis=-1)
        magnitude = jnp.minimum(jnp.exp(log_magnitude), MAX_MAGNITUDE)
        # cos / sin of the raw phase output: the wrap-around is free and atan2 unneeded.
        return jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))

    def __call__(self, features: jax.Array, bandwidth_id: jax.Array | None = None) -> jax.Array:
        """Decodes feature frames to audio.

        Args:
          features: [batch, frames, input_channels].
          bandwidth_id: [] or [batch] int, for an `adanorm` (EnCodec) model.

        Returns:
          [batch, config.num_samples(frames)] float32 waveform.
        """
        return istft(self.spectrum(features, bandwidth_id), self.config)

    def codes_to_features(self, codes: jax.Array) -> jax.Array:
        """EnCodec codes [batch, frames, k] -> [batch, frames, codebook_dim]: the sum of
        each book's vector (book q's rows start at q * codebook_size), as Vocos."""
        cfg = self.config
        if cfg.features != "encodec":
            raise ValueError("codes_to_features needs an EnCodec Vocos (features='encodec')")
        k = codes.shape[-1]
        if k > cfg.num_codebooks:
            raise ValueError(f"codes have {k} codebooks; this vocoder knows {cfg.num_codebooks}")
        rows = codes.astype(jnp.int32) + jnp.arange(k, dtype=jnp.int32) * cfg.codebook_size
        return jnp.sum(self.codebook_weights[rows], axis=-2)


def init_vocos(config: VocosConfig, rng: jax.Array | None = None, num_frames: int = 16) -> dict:
    """Random variables of a Vocos (boxed with logical axes), from `num_frames` dummy frames."""
    model = Vocos(config)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    features = jnp.zeros((1, num_frames, config.input_channels), jnp.float32)
    bandwidth = None if config.adanorm_num_embeddings is None else jnp.zeros((), jnp.int32)
    if config.features == "encodec":
        def init_all(module, feats, bw):
            module.codes_to_features(jnp.zeros((1, 1, 1), jnp.int32))
            return module(feats, bw)
        return model.init(rng, features, bandwidth, method=init_all)
    return model.init(rng, features, bandwidth)


def griffin_lim_from_features(features: jax.Array, config: VocosConfig,
                              n_iter: int = 32) -> jax.Array:
    """The no-training baseline: Griffin-Lim on the magnitudes a mel Vocos's features imply.

    Args:
      features: [batch, frames, n_mels] log-mel frames (`mel_features`), centred.

    Returns:
      [batch, config.num_samples(frames)] float32.
    """
    if config.features != "mel" or config.padding != "center":
        raise ValueError("the Griffin-Lim baseline reads centred mel features")
    filters = spectral.mel_filterbank(config.sample_rate, config.n_fft, config.n_mels,
                                      config.f_min, config.f_max, htk=True, norm=None)
    magnitude = griffin_lim.mel_to_magnitude(jnp.exp(features), filters)
    return griffin_lim.griffin_lim(magnitude, n_fft=config.n_fft, hop_length=config.hop_length,
                                   n_iter=n_iter, length=config.num_samples(features.shape[-2]))
