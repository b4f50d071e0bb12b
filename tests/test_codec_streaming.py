import dataclasses

import jax
import numpy as np
import pytest
from tiny_codec import TINY, make_signal, random_variables

from audiolm_jax.models.codec.model import Codec
from audiolm_jax.models.codec.streaming import (
    CodecStreamDecoder,
    CodecStreamEncoder,
    check_streamable,
    iter_decode_codes,
    iter_encode_codes,
    stream_decode_codes,
    stream_encode_codes,
)

# TINY: hop 4; with reflect padding the first chunk needs 7 frames (28 samples).
HOP, FIRST = 4, 7
# Chunk sizes and pushes below are chosen to share chunk shapes (28, 4 and 3
# samples; 7 and 1 frames), so that each streaming step compiles once.
NUM_SAMPLES = 3 * FIRST * HOP + 3  # 21 hops and a partial one


_offline_encode = jax.jit(lambda model, v, x: model.apply(v, x, method=Codec.encode),
                          static_argnums=0)
_offline_decode = jax.jit(lambda model, v, c: model.apply(v, c, method=Codec.decode),
                          static_argnums=0)


@pytest.fixture(scope="module")
def tiny_codec():
    model = Codec(TINY)
    variables = random_variables(TINY, seed=3)
    audio = np.stack([make_signal(NUM_SAMPLES, TINY.sample_rate, seed=s) for s in (1, 2)])
    audio[1] *= 0.5
    codes, scale = _offline_encode(model, variables, audio)
    assert scale is None
    decoded = _offline_decode(model, variables, codes)
    return model, variables, audio, np.asarray(codes), np.asarray(decoded)


@pytest.mark.parametrize("chunk_size", [HOP, FIRST * HOP])
def test_streamed_codes_equal_offline(tiny_codec, chunk_size):
    model, variables, audio, codes, _ = tiny_codec
    assert codes.shape == (2, 22, 4)
    assert all(len(np.unique(codes[..., q])) >= 4 for q in range(4))  # meaningful codes
    streamed = stream_encode_codes(model, variables, audio, chunk_size)
    assert streamed.dtype == np.int32
    np.testing.assert_array_equal(streamed, codes)


def test_streamed_codes_fewer_codebooks(tiny_codec):
    model, variables, audio, codes, _ = tiny_codec
    streamed = stream_encode_codes(model, variables, audio, HOP, num_quantizers=2)
    np.testing.assert_array_equal(streamed, codes[..., :2])


@pytest.mark.parametrize("chunk_frames", [1, FIRST])
def test_streamed_audio_equals_offline(tiny_codec, chunk_frames):
    model, variables, _, codes, decoded = tiny_codec
    streamed = stream_decode_codes(model, variables, codes, chunk_frames)
    assert streamed.shape == decoded.shape == (2, 22 * HOP, 1)
    np.testing.assert_allclose(streamed, decoded, atol=1e-5)


def test_push_api_and_generators(tiny_codec):
    model, variables, audio, codes, decoded = tiny_codec
    encoder = CodecStreamEncoder(model, variables, bandwidth=32.0)
    first = encoder.push(audio[:, :20])  # 5 hops < the 7 the reflect padding needs
    assert first.shape == (2, 0, 4) and encoder.pending == 20
    pieces = [first, encoder.push(audio[:, 20:30])]
    assert pieces[1].shape == (2, FIRST, 4) and encoder.pending == 2  # 30 = 7 hops + 2
    pieces += [encoder.push(audio[:, i:i + HOP]) for i in range(30, NUM_SAMPLES, HOP)]
    assert encoder.pending == 3
    pieces.append(encoder.flush())
    assert pieces[-1].shape == (2, 1, 4)  # the last, partial hop
    np.testing.assert_array_equal(np.concatenate(pieces, 1), codes)
    with pytest.raises(ValueError, match="flushed"):
        encoder.push(audio)

    # A decoder fed by the encoder's generator, as a live link would run.
    chunks = (audio[:, i:i + FIRST * HOP] for i in range(0, NUM_SAMPLES, FIRST * HOP))
    out = list(iter_decode_codes(model, variables, iter_encode_codes(model, variables, chunks)))
    assert [a.shape[1] for a in out] == [FIRST * HOP] * 3 + [HOP]
    np.testing.assert_allclose(np.concatenate(out, 1), decoded, atol=1e-5)


def test_short_signal_flushes_like_offline(tiny_codec):
    """A stream shorter than the first chunk is encoded at once by flush."""
    model, variables, audio, _, _ = tiny_codec
    stream = CodecStreamEncoder(model, variables)
    assert stream.push(audio[:, :HOP]).shape == (2, 0, 4)
    short = stream.flush()
    # (Not fewer samples than a hop: the SEANet streaming differs from
    # offline for a signal of 2 or 3 samples, shorter than the first conv's reflect
    # padding, whose small-input workaround pads both sides at once offline.)
    offline, _ = _offline_encode(model, variables, audio[:, :HOP])
    assert short.shape == (2, 1, 4)
    np.testing.assert_array_equal(short, offline)


def test_bad_inputs(tiny_codec):
    model, variables, audio, codes, _ = tiny_codec
    bad = codes.copy()
    bad[1, 3, 2] = 16
    with pytest.raises(ValueError, match=r"code 16 at index \(1, 3, 2\) \(codebook 2\)"):
        CodecStreamDecoder(model, variables).push(bad)
    with pytest.raises(ValueError, match="this codec has 4"):
        CodecStreamDecoder(model, variables).push(np.zeros((1, 3, 5), np.int32))
    with pytest.raises(ValueError, match="audio must be"):
        CodecStreamEncoder(model, variables).push(audio[:, :, 0])
    with pytest.raises(ValueError, match="batch 1"):
        CodecStreamEncoder(model, variables, batch_size=2).push(audio[:1])
    with pytest.raises(ValueError, match=r"unsupported bandwidth 5\.0"):
        CodecStreamEncoder(model, variables, bandwidth=5.0)
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        stream_encode_codes(model, variables, audio, 0)


@pytest.mark.parametrize("change,message", [
    (dict(normalize=True), "RMS"),
    (dict(seanet=dataclasses.replace(TINY.seanet, causal=False)), "causal=True"),
    (dict(seanet=dataclasses.replace(TINY.seanet, causal=False, norm_type="time_group_norm")),
     "causal=True"),
    (dict(seanet=dataclasses.replace(TINY.seanet, norm_type="time_group_norm")),
     "time_group_norm"),
])
def test_what_cannot_stream_says_why(change, message):
    config = dataclasses.replace(TINY, **change)
    with pytest.raises(ValueError, match=f"cannot stream.*{message}"):
        check_streamable(config)
    model = Codec(config)  # the variables are never looked at: the check comes first
    with pytest.raises(ValueError, match=message):
        stream_encode_codes(model, {}, np.zeros((1, 64, 1), np.float32), 8)
    with pytest.raises(ValueError, match=message):
        CodecStreamDecoder(model, {})
