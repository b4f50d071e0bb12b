"""The SoundStream / EnCodec neural codec: SEANet encoder, residual VQ, SEANet decoder.

- `model`: `CodecConfig`, `Codec`.
- `seanet`: the SEANet encoder and decoder (HF EnCodec layer layout).
- `inference`: windowed offline `encode_audio` / `decode_audio`.
- `streaming`: chunked real-time encoding and decoding.
- `train`: the adversarial train step (discriminators in `models.gan`).

Import: `python -m audiolm_jax.convert codec HF_DIR OUT` (EnCodec).
"""

from __future__ import annotations

from audiolm_jax.models.codec.inference import (
    EncodedAudio,
    decode_audio,
    encode_audio,
    init_codec,
    jit_decode_latents,
    jit_dequantize,
    jit_encode_latents,
    jit_quantize,
    linear_overlap_add,
    window_bounds,
)
from audiolm_jax.models.codec.model import (
    Codec,
    CodecConfig,
    CodecOutput,
    rms_scale,
)
from audiolm_jax.models.codec.seanet import (
    LayerSpec,
    SEANetConfig,
    SEANetDecoder,
    SEANetEncoder,
    SEANetResnetBlock,
    StreamingState,
    decoder_plan,
    encoder_plan,
)
from audiolm_jax.models.codec.streaming import (
    CodecStreamDecoder,
    CodecStreamEncoder,
    SEANet,
    check_streamable,
    decode_chunk,
    encode_chunk,
    init_streaming_state,
    iter_decode_codes,
    iter_encode_codes,
    min_first_chunk_frames,
    stream_decode,
    stream_decode_codes,
    stream_encode,
    stream_encode_codes,
)
from audiolm_jax.models.codec.train import (
    build_codec,
    build_discriminator,
    make_eval_step,
    make_init_fn,
    make_train_phases,
    make_train_step,
)


def load(path):
    """A codec and its variables from an export, a training workdir or a Hugging Face
    EnCodec directory: `(Codec, {"params", "codebook"})`."""
    # Imported on call: that module imports this package.
    from audiolm_jax.convert.encodec import load_codec

    return load_codec(path)


__all__ = [
    "Codec",
    "CodecConfig",
    "CodecOutput",
    "CodecStreamDecoder",
    "CodecStreamEncoder",
    "EncodedAudio",
    "LayerSpec",
    "SEANet",
    "SEANetConfig",
    "SEANetDecoder",
    "SEANetEncoder",
    "SEANetResnetBlock",
    "StreamingState",
    "build_codec",
    "build_discriminator",
    "check_streamable",
    "decode_audio",
    "decode_chunk",
    "decoder_plan",
    "encode_audio",
    "encode_chunk",
    "encoder_plan",
    "init_codec",
    "init_streaming_state",
    "iter_decode_codes",
    "iter_encode_codes",
    "jit_decode_latents",
    "jit_dequantize",
    "jit_encode_latents",
    "jit_quantize",
    "linear_overlap_add",
    "load",
    "make_eval_step",
    "make_init_fn",
    "make_train_phases",
    "make_train_step",
    "min_first_chunk_frames",
    "rms_scale",
    "stream_decode",
    "stream_decode_codes",
    "stream_encode",
    "stream_encode_codes",
    "window_bounds",
]
