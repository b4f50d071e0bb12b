"""SEANet layers and encoder/decoder against PyTorch and Hugging Face's EnCodec.

The reference modules are built from tiny `transformers.EncodecConfig`s with
random weights; `hf_to_flax` below is the weight mapping documented in
`audiolm_jax/models/codec/seanet.py` (the real importer lives in `audiolm_jax.convert`).
"""

import functools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import unflatten_dict

from audiolm_jax.layers.conv import LSTM, Conv1d, ConvTranspose1d, conv1d, conv_transpose1d, pad1d
from audiolm_jax.models.codec.seanet import (
    SEANetConfig,
    SEANetDecoder,
    SEANetEncoder,
    decoder_plan,
    encoder_plan,
)
from audiolm_jax.models.codec.streaming import (
    decode_chunk,
    encode_chunk,
    init_streaming_state,
    min_first_chunk_frames,
    stream_decode,
    stream_encode,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
me = pytest.importorskip("transformers.models.encodec.modeling_encodec")

TOL_LAYER = 1e-5
TOL_MODEL = 1e-4

# HF key (below a conv/LSTM module) -> Flax name; both weight-norm spellings.
_CONV_KEYS = {
    "conv.parametrizations.weight.original0": "weight_g",
    "conv.parametrizations.weight.original1": "weight_v",
    "conv.weight_g": "weight_g",
    "conv.weight_v": "weight_v",
    "conv.weight": "weight",
    "conv.bias": "bias",
    "norm.weight": "norm/scale",
    "norm.bias": "norm/bias",
}


# ----------------------------------------------------------------------------- helpers


def hf_to_flax(model: "torch.nn.Module") -> dict:
    """Flax params from an HF EnCodec module (a conv, an LSTM, an encoder or a decoder)."""
    flat = {}
    for name, module in model.named_modules():
        # "layers.3.block.1" -> ("layers_3", "block_1")
        path = tuple(re.sub(r"(\w+)\.(\d+)", r"\1_\2", name).split(".")) if name else ()
        if isinstance(module, me.EncodecConv1d | me.EncodecConvTranspose1d):
            perm = (2, 1, 0) if isinstance(module, me.EncodecConv1d) else (2, 0, 1)
            for key, value in module.state_dict().items():
                value = value.numpy()
                flat[path + tuple(_CONV_KEYS[key].split("/"))] = (
                    value.transpose(perm) if value.ndim == 3 else value)
        elif isinstance(module, me.EncodecLSTM):
            for key, value in module.lstm.state_dict().items():
                flat[path + (key,)] = value.numpy().T
    return unflatten_dict(flat)


def randomize_(model: "torch.nn.Module", seed: int = 0) -> None:
    """Perturbs what torch's default init leaves trivial: weight-norm gains
    (= ||v||), GroupNorm affine (1, 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("original0", "weight_g")):
                p.mul_(0.5 + torch.rand(p.shape, generator=gen))
            elif ".norm." in f".{name}":
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


def hf_config(cfg: SEANetConfig) -> "transformers.EncodecConfig":
    kwargs = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__ if f != "causal"}
    kwargs["upsampling_ratios"] = list(cfg.upsampling_ratios)
    return transformers.EncodecConfig(use_causal_conv=cfg.causal, **kwargs)


def torch_apply(module, x: np.ndarray) -> np.ndarray:
    """Runs a channels-first torch module on channels-last x."""
    with torch.no_grad():
        return module(torch.from_numpy(x.transpose(0, 2, 1).copy())).numpy().transpose(0, 2, 1)


def max_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@functools.partial(jax.jit, static_argnums=0)
def apply(model: nn.Module, params: dict, x) -> jax.Array:
    """`model.apply` under jit: one XLA compile beats hundreds of eager op dispatches, and
    tests that share a model and shapes share the executable."""
    return model.apply({"params": params}, x)


def model_inputs(cfg: SEANetConfig) -> tuple[np.ndarray, np.ndarray]:
    """The shapes every model test uses (shared shapes share compiled programs): audio
    of 13 hops + 3 samples (a partial frame) and 14 latent frames."""
    audio = 0.5 * randn(2, 13 * cfg.hop_length + 3, cfg.audio_channels)
    return audio, randn(2, 14, cfg.hidden_size, seed=3)


def randn(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


TINY = SEANetConfig(num_filters=4, upsampling_ratios=(4, 2), hidden_size=16)


# ----------------------------------------------------------------------------- raw ops vs torch


@pytest.mark.parametrize("kernel,stride,dilation", [(1, 1, 1), (3, 1, 1), (4, 2, 1), (7, 1, 3),
                                                    (5, 3, 2), (2, 3, 1)])
def test_conv1d_matches_torch(kernel, stride, dilation):
    x, w, b = randn(2, 29, 3), randn(kernel, 3, 5, seed=1), randn(5, seed=2)
    ref = torch.nn.Conv1d(3, 5, kernel, stride, dilation=dilation)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(w.transpose(2, 1, 0).copy()))
        ref.bias.copy_(torch.from_numpy(b))
    assert max_diff(conv1d(x, w, stride, dilation) + b, torch_apply(ref, x)) < TOL_LAYER

    if (kernel - 1) * dilation + 1 < stride:
        return  # EnCodec's padding is undefined there; the module rejects it
    # The module pads to ceil(len / stride) frames; the same padding in torch agrees.
    for causal in (False, True):
        module = Conv1d(5, kernel, stride, dilation, causal=causal, pad_mode="constant",
                        norm_type="none")
        params = {"weight": w, "bias": b}
        out = module.apply({"params": params}, x)
        pad = (kernel - 1) * dilation + 1 - stride
        extra = math.ceil(29 / stride) * stride - 29
        left = pad if causal else pad - pad // 2
        padded = np.pad(x, ((0, 0), (left, pad - left + extra), (0, 0)))
        assert out.shape == (2, math.ceil(29 / stride), 5)
        assert max_diff(out, torch_apply(ref, padded)) < TOL_LAYER


@pytest.mark.parametrize("kernel,stride", [(4, 2), (3, 1), (10, 5), (5, 2), (2, 3)])
def test_conv_transpose1d_matches_torch(kernel, stride):
    x, w, b = randn(2, 11, 3), randn(kernel, 3, 5, seed=1), randn(5, seed=2)
    ref = torch.nn.ConvTranspose1d(3, 5, kernel, stride)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(w.transpose(1, 2, 0).copy()))  # [in, out, K]
        ref.bias.copy_(torch.from_numpy(b))
    full = torch_apply(ref, x)
    assert max_diff(conv_transpose1d(x, w, stride) + b, full) < TOL_LAYER
    if kernel < stride:
        return
    pad = kernel - stride
    for causal, left in ((True, 0), (False, pad - pad // 2)):
        module = ConvTranspose1d(5, kernel, stride, causal=causal, norm_type="none")
        out = module.apply({"params": {"weight": w, "bias": b}}, x)
        assert out.shape == (2, 11 * stride, 5)
        assert max_diff(out, full[:, left:left + 11 * stride]) < TOL_LAYER


def test_pad1d_matches_torch_including_short_reflect():
    for length, left, right in [(9, 3, 2), (3, 4, 1), (1, 2, 2), (2, 0, 3)]:
        x = randn(1, length, 2)
        ref = me.EncodecConv1d._pad1d(torch.from_numpy(x.transpose(0, 2, 1).copy()),
                                      (left, right), mode="reflect").numpy().transpose(0, 2, 1)
        assert max_diff(pad1d(x, left, right, "reflect"), ref) == 0


# ----------------------------------------------------------------------------- layers vs HF


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant", "replicate"])
@pytest.mark.parametrize("norm_type", ["weight_norm", "time_group_norm"])
def test_conv1d_matches_hf(causal, pad_mode, norm_type):
    config = transformers.EncodecConfig(use_causal_conv=causal, pad_mode=pad_mode,
                                        norm_type=norm_type)
    for i, (kernel, stride, dilation) in enumerate([(7, 1, 1), (3, 1, 2), (8, 4, 1),
                                                    (5, 3, 1), (1, 1, 1)]):
        torch.manual_seed(i)
        ref = me.EncodecConv1d(config, 3, 6, kernel, stride, dilation)
        randomize_(ref, seed=i)
        params = hf_to_flax(ref)
        module = Conv1d(6, kernel, stride, dilation, causal=causal, pad_mode=pad_mode,
                        norm_type=norm_type)
        for length in (4, 23):  # 4 <= padding hits the short-input reflect workaround
            x = randn(2, length, 3, seed=length)
            out = module.apply({"params": params}, x)
            assert out.shape[1] == math.ceil(length / stride)
            assert max_diff(out, torch_apply(ref, x)) < TOL_LAYER, (kernel, stride, length)


@pytest.mark.parametrize("causal,trim_right_ratio", [(True, 1.0), (True, 0.5), (False, 1.0)])
@pytest.mark.parametrize("norm_type", ["weight_norm", "time_group_norm"])
def test_conv_transpose1d_matches_hf(causal, trim_right_ratio, norm_type):
    config = transformers.EncodecConfig(use_causal_conv=causal, norm_type=norm_type,
                                        trim_right_ratio=trim_right_ratio)
    for i, (kernel, stride) in enumerate([(4, 2), (10, 5), (3, 1), (7, 3)]):
        torch.manual_seed(i)
        ref = me.EncodecConvTranspose1d(config, 6, 3, kernel, stride)
        randomize_(ref, seed=i)
        params = hf_to_flax(ref)
        if norm_type == "weight_norm":  # torch's weight norm on a transposed conv: gain per input
            assert params["weight_g"].shape == (1, 6, 1)
        module = ConvTranspose1d(3, kernel, stride, causal=causal,
                                 trim_right_ratio=trim_right_ratio, norm_type=norm_type)
        x = randn(2, 9, 6, seed=i)
        out = module.apply({"params": params}, x)
        assert out.shape == (2, 9 * stride, 3)
        assert max_diff(out, torch_apply(ref, x)) < TOL_LAYER, (kernel, stride)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm_matches_hf(num_layers):
    torch.manual_seed(0)
    ref = me.EncodecLSTM(transformers.EncodecConfig(num_lstm_layers=num_layers), 8)
    x = randn(3, 17, 8)
    out = LSTM(num_layers).apply({"params": hf_to_flax(ref)}, x)
    assert max_diff(out, torch_apply(ref, x)) < TOL_LAYER
    assert max_diff(LSTM(0).apply({}, x), x) == 0  # no layers: an identity, not 2x


def test_param_names_shapes_and_logical_axes():
    variables = Conv1d(6, 5, causal=True).init(jax.random.key(0), jnp.zeros((1, 8, 3)))
    specs = nn.get_partition_spec(variables)["params"]
    params = nn.unbox(variables)["params"]
    assert params["weight_v"].shape == (5, 3, 6) and params["weight_g"].shape == (1, 1, 6)
    assert tuple(specs["weight_v"]) == (None, "conv_in", "conv_out")
    # torch's weight_norm starts with g = ||v||, i.e. the effective kernel equals v.
    norm = np.linalg.norm(np.asarray(params["weight_v"]).reshape(-1, 6), axis=0)
    np.testing.assert_allclose(np.asarray(params["weight_g"]).ravel(), norm, rtol=1e-6)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


# ----------------------------------------------------------------------------- SEANet vs HF

MODEL_CONFIGS = {
    "causal": TINY,
    # EnCodec 48 kHz style: non-causal, time group norm; also odd ratios, two dilated
    # residual blocks per resolution, identity shortcuts.
    "non_causal_group_norm": SEANetConfig(
        num_filters=6, upsampling_ratios=(2, 3), hidden_size=16, causal=False,
        norm_type="time_group_norm", num_residual_layers=2, use_conv_shortcut=False,
        compress=1, kernel_size=5, last_kernel_size=3),
    "stereo_constant": SEANetConfig(audio_channels=2, num_filters=4, upsampling_ratios=(2, 2),
                                    hidden_size=8, pad_mode="constant", num_lstm_layers=1),
}


_HF_KIND = {"conv": "EncodecConv1d", "conv_transpose": "EncodecConvTranspose1d",
            "resblock": "EncodecResnetBlock", "lstm": "EncodecLSTM", "elu": "ELU"}


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_seanet_matches_hf(name):
    cfg = MODEL_CONFIGS[name]
    torch.manual_seed(0)
    hf_encoder, hf_decoder = me.EncodecEncoder(hf_config(cfg)), me.EncodecDecoder(hf_config(cfg))
    randomize_(hf_encoder, 1)
    randomize_(hf_decoder, 2)
    assert [type(m).__name__ for m in hf_encoder.layers] == [_HF_KIND[s.kind] for s in
                                                             encoder_plan(cfg)]
    assert [type(m).__name__ for m in hf_decoder.layers] == [_HF_KIND[s.kind] for s in
                                                             decoder_plan(cfg)]
    encoder, decoder = SEANetEncoder(cfg), SEANetDecoder(cfg)
    enc_params, dec_params = hf_to_flax(hf_encoder), hf_to_flax(hf_decoder)
    # Same tree as our own init: every HF weight has exactly one home.
    for model, params, width in ((encoder, enc_params, cfg.audio_channels),
                                 (decoder, dec_params, cfg.hidden_size)):
        own = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, cfg.hop_length, width)))
        assert jax.tree.map(np.shape, nn.unbox(own["params"])) == jax.tree.map(np.shape, params)

    audio, z = model_inputs(cfg)
    latents = apply(encoder, enc_params, audio)
    assert latents.shape == (2, 14, cfg.hidden_size)
    assert max_diff(latents, torch_apply(hf_encoder, audio)) < TOL_MODEL

    recon = apply(decoder, dec_params, z)
    assert recon.shape == (2, 14 * cfg.hop_length, cfg.audio_channels)
    assert max_diff(recon, torch_apply(hf_decoder, z)) < TOL_MODEL


def test_default_config_is_encodec_24khz():
    cfg, hf = SEANetConfig(), transformers.EncodecConfig()
    assert SEANetConfig.from_encodec_config(hf) == cfg
    assert cfg.hop_length == 320
    assert [(s.kind, s.stride) for s in encoder_plan(cfg) if s.stride > 1] == [
        ("conv", 2), ("conv", 4), ("conv", 5), ("conv", 8)]
    assert len(encoder_plan(cfg)) == len(decoder_plan(cfg)) == 16
    with pytest.raises(ValueError, match="norm_type"):
        SEANetConfig(norm_type="batch_norm")


# ----------------------------------------------------------------------------- streaming


@pytest.fixture(scope="module")
def tiny_models():
    """A causal reflect-padded tiny codec with random (non-trivial) weights."""
    # Weights from the torch modules: a jitted Flax init costs seconds of XLA compile.
    torch.manual_seed(1)
    hf_encoder, hf_decoder = me.EncodecEncoder(hf_config(TINY)), me.EncodecDecoder(hf_config(TINY))
    randomize_(hf_encoder, 3)
    randomize_(hf_decoder, 4)
    return SEANetEncoder(TINY), hf_to_flax(hf_encoder), SEANetDecoder(TINY), hf_to_flax(hf_decoder)


def test_stream_encode_equals_offline(tiny_models):
    encoder, params, _, _ = tiny_models
    hop = TINY.hop_length
    first = min_first_chunk_frames(TINY, "encoder")
    assert first == 7  # the last conv (kernel 7) reflects 6 frames into the future
    audio, _ = model_inputs(TINY)  # 13 hops + 3: the last chunk is partial
    offline = apply(encoder, params, audio)
    streamed = stream_encode(encoder, params, audio, chunk_size=hop)
    assert max_diff(streamed, offline) < TOL_LAYER

    # The same by hand with 2-hop chunks: the state is a pytree of zeros to start with.
    state = init_streaming_state(encoder, batch_size=2)
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(state))
    bounds = [0, first * hop] + list(range((first + 2) * hop, audio.shape[1], 2 * hop))
    pieces = []
    for start, stop in zip(bounds, bounds[1:] + [audio.shape[1]]):
        frames, state = encode_chunk(encoder, params, state, audio[:, start:stop])
        pieces.append(frames)
    assert max_diff(jnp.concatenate(pieces, axis=1), offline) < TOL_LAYER


def test_stream_decode_equals_offline(tiny_models):
    _, _, decoder, params = tiny_models
    _, latents = model_inputs(TINY)  # 14 frames
    offline = apply(decoder, params, latents)
    assert min_first_chunk_frames(TINY, "decoder") == 7
    streamed = stream_decode(decoder, params, latents, chunk_frames=1)
    assert max_diff(streamed, offline) < TOL_LAYER

    state, pieces = init_streaming_state(decoder, batch_size=2), []
    for start in (0, 7):
        audio, state = decode_chunk(decoder, params, state, latents[:, start:start + 7])
        pieces.append(audio)
    assert max_diff(jnp.concatenate(pieces, axis=1), offline) < TOL_LAYER


def test_constant_padding_streams_from_one_frame():
    cfg = MODEL_CONFIGS["stereo_constant"]
    assert min_first_chunk_frames(cfg, "encoder") == 1
    torch.manual_seed(2)
    encoder, params = SEANetEncoder(cfg), hf_to_flax(me.EncodecEncoder(hf_config(cfg)))
    audio, _ = model_inputs(cfg)
    streamed = stream_encode(encoder, params, audio, chunk_size=cfg.hop_length)
    assert max_diff(streamed, apply(encoder, params, audio)) < TOL_LAYER


def test_streaming_rejects_what_cannot_stream(tiny_models):
    encoder, params, _, _ = tiny_models
    audio = jnp.zeros((1, 64, 1))
    with pytest.raises(ValueError, match="reflect"):
        stream_encode(encoder, params, audio, chunk_size=8, first_chunk_size=8)
    with pytest.raises(ValueError, match="multiples"):
        stream_encode(encoder, params, audio, chunk_size=12)
    # Why: reflect padding at the stream's start mirrors samples a short first chunk lacks.
    audio, _ = model_inputs(TINY)
    early, _ = encode_chunk(encoder, params, init_streaming_state(encoder, 2), audio[:, :8])
    assert max_diff(early, apply(encoder, params, audio)[:, :1]) > 1e-3
    for bad in (SEANetConfig(causal=False), SEANetConfig(norm_type="time_group_norm")):
        with pytest.raises(ValueError, match="streaming"):
            init_streaming_state(SEANetEncoder(bad), 1)


# ----------------------------------------------------------------------------- jit, grads, dtype


def test_jit_and_finite_gradients(tiny_models):
    encoder, enc, decoder, dec = tiny_models
    audio = jnp.asarray(0.5 * randn(2, 16 * TINY.hop_length, 1))  # whole frames: recon fits

    @jax.jit
    def loss_fn(params):
        latents = encoder.apply({"params": params["enc"]}, audio)
        recon = decoder.apply({"params": params["dec"]}, latents)
        return jnp.mean(jnp.abs(recon - audio))

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))({"enc": enc, "dec": dec})
    assert np.isfinite(loss)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) > 0 for g in leaves) == len(leaves)  # all params used


def test_bfloat16_compute_stays_close(tiny_models):
    encoder, enc, _, _ = tiny_models
    audio, _ = model_inputs(TINY)
    ref = apply(encoder, enc, audio)
    low = apply(SEANetEncoder(TINY, dtype=jnp.bfloat16), enc, audio)
    assert low.dtype == jnp.float32
    assert max_diff(low, ref) < 0.05 * float(jnp.abs(ref).max())


@pytest.mark.parametrize("init, carries_signal", [("lecun", True), ("torch", False)])
def test_init_lets_the_waveform_reach_the_latents(init, carries_signal):
    # PyTorch's default conv init shrinks a signal's variance ~3x per layer, so
    # after EnCodec's encoder the latents are the biases' constant and training
    # stalls (the README's codec section); "lecun" keeps the waveform visible.
    config = SEANetConfig(num_filters=8, hidden_size=32, num_lstm_layers=1, param_init=init)
    audio = 0.1 * jax.random.normal(jax.random.key(1), (2, 6400, 1))
    encoder = SEANetEncoder(config)
    latents = jax.jit(lambda x: encoder.apply(encoder.init(jax.random.key(0), x), x))(audio)
    time_varying = float(jnp.mean(jnp.std(latents, axis=1)))
    overall = float(jnp.std(latents))
    assert (time_varying > 0.5 * overall) == carries_signal, (time_varying, overall)


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="param_init must be one of"):
        SEANetConfig(param_init="xavier")
