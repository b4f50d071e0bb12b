"""The SoundStream / EnCodec codec: SEANet encoder -> residual VQ -> SEANet decoder.

`Codec` is one Flax module with methods for each half (`encode_latents`,
`quantize`, `dequantize`, `decode_latents`) so callers can jit them apart.
The SEANet halves live in `seanet.py`, windowed offline inference over long
signals in `inference.py`, real-time streaming in `streaming.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from audiolm_jax.models.codec.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from audiolm_jax.quantization.vq import ResidualVectorQuantizer, bandwidth_to_num_quantizers


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """A whole SoundStream / EnCodec codec: SEANet autoencoder plus residual VQ.

    The first group of fields mirrors `transformers.EncodecConfig` (see
    `from_encodec_config`); the second group only matters for training.

    Attributes:
      seanet: encoder/decoder architecture.
      sample_rate: Hz.
      codebook_size: codes per codebook (a power of two, as in EnCodec).
      target_bandwidths: kbit/s the model serves; the largest sets the number
        of codebooks, and quantizer dropout draws from these.
      normalize: divide each chunk by its RMS before encoding and multiply the
        decoded chunk back (EnCodec 48 kHz); the scale travels with the codes.
      chunk_length_s: encode in windows of this many seconds (EnCodec 48 kHz
        uses 1 s) and overlap-add the decoded windows; None encodes the whole
        signal at once.
      overlap: fraction of a window shared with the next one.
      quantizer_dropout: train with a random bandwidth per batch.
      commitment_weight: weight of the commitment loss.
      ema_decay: EMA decay of the codebooks.
      kmeans_init: initialize codebooks with k-means on the first batch.
      kmeans_iters: iterations of that k-means.
      threshold_ema_dead_code: restart codes whose EMA usage falls below this.
    """

    seanet: SEANetConfig = SEANetConfig()
    sample_rate: int = 24000
    codebook_size: int = 1024
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    normalize: bool = False
    chunk_length_s: float | None = None
    overlap: float | None = None
    quantizer_dropout: bool = True
    commitment_weight: float = 1.0
    ema_decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0

    def __post_init__(self):
        if isinstance(self.seanet, Mapping):
            object.__setattr__(self, "seanet", SEANetConfig(**self.seanet))
        object.__setattr__(self, "target_bandwidths",
                           tuple(float(b) for b in self.target_bandwidths))
        if self.sample_rate <= 0:
            raise ValueError(f"CodecConfig.sample_rate must be positive, got {self.sample_rate}")
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ValueError("CodecConfig.codebook_size must be a power of two, got "
                             f"{self.codebook_size}")
        if not self.target_bandwidths or min(self.target_bandwidths) <= 0:
            raise ValueError("CodecConfig.target_bandwidths must be positive kbit/s, got "
                             f"{self.target_bandwidths}")
        if self.num_quantizers < 1:
            raise ValueError(f"CodecConfig: the largest bandwidth {max(self.target_bandwidths)} "
                             "kbps is below one codebook's bitrate "
                             f"({self.frame_rate * self.bits_per_code / 1000:g} kbps)")
        if self.chunk_length_s is not None and self.chunk_length_s <= 0:
            raise ValueError(f"CodecConfig.chunk_length_s must be positive, got "
                             f"{self.chunk_length_s}")
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"CodecConfig.overlap must be in [0, 1), got {self.overlap}")

    @property
    def hop_length(self) -> int:
        return self.seanet.hop_length

    @property
    def frame_rate(self) -> int:
        """Code frames per second, rounded up as EnCodec does (75 at 24 kHz)."""
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def bits_per_code(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def num_quantizers(self) -> int:
        """Codebooks needed for the largest bandwidth (32 for EnCodec 24 kHz)."""
        return int(1000 * max(self.target_bandwidths) // (self.frame_rate * self.bits_per_code))

    @property
    def chunk_length(self) -> int | None:
        """Samples per encoding window, or None for whole-signal encoding."""
        if self.chunk_length_s is None:
            return None
        return int(self.chunk_length_s * self.sample_rate)

    @property
    def chunk_stride(self) -> int | None:
        """Samples between the starts of consecutive windows."""
        if self.chunk_length is None:
            return None
        if self.overlap is None:
            return self.chunk_length
        return max(1, int((1.0 - self.overlap) * self.chunk_length))

    def num_quantizers_for(self, bandwidth: float | None) -> int:
        """Codebooks used at `bandwidth` kbit/s (None: all of them).

        Raises:
          ValueError: naming the bandwidth when it is not one of
            `target_bandwidths`.
        """
        if bandwidth is None:
            return self.num_quantizers
        return bandwidth_to_num_quantizers(bandwidth, self.frame_rate, self.codebook_size,
                                           max_quantizers=self.num_quantizers,
                                           supported=self.target_bandwidths)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict; `CodecConfig(**d)` rebuilds the config."""
        out = dataclasses.asdict(self)
        out["seanet"]["upsampling_ratios"] = list(self.seanet.upsampling_ratios)
        out["target_bandwidths"] = list(self.target_bandwidths)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodecConfig:
        """Inverse of `to_dict`; unknown fields are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CodecConfig fields {unknown}; known: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("seanet"), Mapping):
            seanet_known = {f.name for f in dataclasses.fields(SEANetConfig)}
            bad = sorted(set(data["seanet"]) - seanet_known)
            if bad:
                raise ValueError(f"unknown SEANetConfig fields {bad}; known: "
                                 f"{sorted(seanet_known)}")
            data["seanet"] = SEANetConfig(**data["seanet"])
        return cls(**data)

    @classmethod
    def from_encodec_config(cls, config: Any, **training: Any) -> CodecConfig:
        """The codec described by a `transformers.EncodecConfig` (object or config.json dict).

        Args:
          config: the Hugging Face config.
          **training: values for the training-only fields.
        """
        get = config.get if isinstance(config, Mapping) else functools.partial(getattr, config)
        codebook_dim = get("codebook_dim", None)
        hidden = get("hidden_size", 128)
        if codebook_dim not in (None, hidden):
            raise ValueError(f"EnCodec codebook_dim={codebook_dim} differs from hidden_size="
                             f"{hidden}; only codebook_dim == hidden_size (no projection) is "
                             "supported, as in every public EnCodec checkpoint")
        return cls(seanet=SEANetConfig.from_encodec_config(config),
                   sample_rate=get("sampling_rate", 24000),
                   codebook_size=get("codebook_size", 1024),
                   target_bandwidths=tuple(get("target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0))),
                   normalize=bool(get("normalize", False)),
                   chunk_length_s=get("chunk_length_s", None),
                   overlap=get("overlap", None), **training)


@struct.dataclass
class CodecOutput:
    """What `Codec.__call__` returns.

    Attributes:
      audio: [batch, samples, channels] reconstruction, trimmed to the input length.
      latents: [batch, frames, hidden_size] encoder output before quantization.
      codes: [batch, frames, n_q] int32.
      commitment_loss: scalar.
      perplexity: [n_q] code usage per codebook (see `QuantizerOutput`).
      num_active: int32 scalar, codebooks summed into the reconstruction.
    """

    audio: jax.Array
    latents: jax.Array
    codes: jax.Array
    commitment_loss: jax.Array
    perplexity: jax.Array
    num_active: jax.Array


def rms_scale(audio: jax.Array) -> jax.Array:
    """EnCodec's normalization scale: RMS of the channel mean, plus 1e-8.

    [batch, samples, channels] -> [batch, 1, 1].
    """
    mono = jnp.mean(audio, axis=-1, keepdims=True)
    return jnp.sqrt(jnp.mean(jnp.square(mono), axis=1, keepdims=True)) + 1e-8


class Codec(nn.Module):
    """SEANet encoder -> residual VQ -> SEANet decoder (SoundStream / EnCodec).

    Variables: `params` (`encoder/...`, `decoder/...`, as in `SEANetEncoder` /
    `SEANetDecoder`) and `codebook` (`quantizer/layers_{i}/...`, see
    `audiolm_jax.quantization.vq`). `__call__` is the training forward pass
    over one window; `encode` / `decode` work on one window too, and
    `encode_audio` / `decode_audio` add EnCodec's windowing and overlap-add.

    Attributes:
      config: the codec.
      dtype: compute dtype of the convolutions (params, codebooks and outputs
        stay float32).
      precision: `jax.lax` precision of convolutions and matmuls.
    """

    config: CodecConfig = CodecConfig()
    dtype: Any = jnp.float32
    precision: Any = None

    def setup(self):
        cfg = self.config
        self.encoder = SEANetEncoder(cfg.seanet, self.dtype, self.precision)
        self.decoder = SEANetDecoder(cfg.seanet, self.dtype, self.precision)
        self.quantizer = ResidualVectorQuantizer(
            dim=cfg.seanet.hidden_size, num_quantizers=cfg.num_quantizers,
            codebook_size=cfg.codebook_size, decay=cfg.ema_decay, kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            commitment_weight=cfg.commitment_weight, quantizer_dropout=cfg.quantizer_dropout,
            bandwidths=cfg.target_bandwidths, frame_rate=cfg.frame_rate)

    def __call__(self, audio: jax.Array, *, train: bool, rng: jax.Array | None = None,
                 num_quantizers: int | None = None,
                 bypass_quantizer: bool | jax.Array = False) -> CodecOutput:
        """Encodes, quantizes and decodes one window.

        Args:
          audio: [batch, samples, audio_channels].
          train: straight-through quantization, codebook updates (when the
            `codebook` collection is mutable) and quantizer dropout.
          rng: PRNG key, needed in training.
          num_quantizers: a fixed number of codebooks (static); None means
            quantizer dropout in training, all codebooks otherwise.
          bypass_quantizer: (may be traced) decode the unquantized latents and
            report a zero commitment loss, for a quantizer warm-up. The codes
            are still computed; the caller decides whether to keep the
            codebook updates (see `models.codec.train`).

        Returns:
          CodecOutput.
        """
        scale = rms_scale(audio) if self.config.normalize else None
        latents = self.encoder(audio / scale if scale is not None else audio)
        q = self.quantizer(latents, train=train, num_quantizers=num_quantizers, rng=rng)
        quantized = jnp.where(bypass_quantizer, latents, q.quantized)
        commitment = jnp.where(bypass_quantizer, 0.0, q.commitment_loss)
        decoded = self.decoder(quantized)[:, :audio.shape[1]]
        if scale is not None:
            decoded = decoded * scale
        return CodecOutput(audio=decoded, latents=latents, codes=q.codes,
                           commitment_loss=commitment, perplexity=q.perplexity,
                           num_active=q.num_active)

    def encode(self, audio: jax.Array, num_quantizers: int | None = None
               ) -> tuple[jax.Array, jax.Array | None]:
        """Codes of one window (EnCodec's `_encode_frame`).

        Args:
          audio: [batch, samples, audio_channels].
          num_quantizers: codebooks to use; all when None.

        Returns:
          (codes [batch, ceil(samples / hop), n_q] int32, scale [batch] or None
          when the config does not normalize).
        """
        latents, scale = self.encode_latents(audio)
        return self.quantizer.encode(latents, num_quantizers), scale

    def decode(self, codes: jax.Array, scale: jax.Array | None = None) -> jax.Array:
        """Audio of one window's codes (EnCodec's `_decode_frame`).

        Args:
          codes: [batch, frames, n_q] with n_q <= num_quantizers.
          scale: [batch], from `encode` when the config normalizes.

        Returns:
          [batch, frames * hop_length, audio_channels] float32.
        """
        return self.decode_latents(self.quantizer.decode(codes), scale)

    def encode_latents(self, audio: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Encoder half of `encode`: (latents [batch, frames, hidden], scale [batch] or None)."""
        scale = rms_scale(audio) if self.config.normalize else None
        latents = self.encoder(audio / scale if scale is not None else audio)
        return latents, (scale[:, 0, 0] if scale is not None else None)

    def decode_latents(self, latents: jax.Array, scale: jax.Array | None = None) -> jax.Array:
        """Decoder half of `decode`: latents (and scale) -> [batch, frames * hop, channels]."""
        audio = self.decoder(latents)
        return audio * scale[:, None, None] if scale is not None else audio

    def quantize(self, latents: jax.Array, num_quantizers: int | None = None) -> jax.Array:
        """Codes of encoder latents: [batch, frames, hidden] -> [batch, frames, n_q]."""
        return self.quantizer.encode(latents, num_quantizers)

    def dequantize(self, codes: jax.Array) -> jax.Array:
        """Latents of codes: [batch, frames, n_q] -> [batch, frames, hidden]."""
        return self.quantizer.decode(codes)
