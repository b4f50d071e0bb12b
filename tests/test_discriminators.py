"""Discriminators (MS-STFTD, MPD, MRD), the codec's losses and the loss balancer."""

import importlib.machinery
import sys
import types

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import linen as nn

from audiolm_jax import losses as cl
from audiolm_jax.models.gan import discriminators as dm

SR = 16_000

# Tiny configurations: the same code paths as the defaults, a fraction of the work.
STFT_KW = dict(n_ffts=(128, 64), filters=4, max_filters=8, filters_scale=2)
MPD_KW = dict(periods=(2, 3), channels=(4, 8, 8))
MRD_KW = dict(window_lengths=(128,), channels=4)


def _audio(batch, samples, channels, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(0.3 * rng.standard_normal((batch, samples, channels)), jnp.float32)


def _key(seed):
    """Init keys use the "rbg" generator: XLA compiles threefry's random bits for
    every parameter slowly on CPU (seconds per model); rbg takes a fraction."""
    return jax.random.key(seed, impl="rbg")


def _shapes(tree):
    return [[a.shape for a in feats] for feats in tree]


# ----------------------------------------------------------------- discriminators


@pytest.mark.parametrize("channels", [1, 2])
def test_stft_discriminator_shapes(channels):
    x = _audio(2, 1000, channels)
    disc = dm.MultiScaleSTFTDiscriminator(**STFT_KW)
    params = jax.jit(disc.init)(_key(1), x)
    logits, feats = jax.jit(disc.apply)(params, x)
    assert len(logits) == len(feats) == 2
    for n_fft, logit, fmaps in zip(STFT_KW["n_ffts"], logits, feats):
        frames, bins = 1 + (1000 - n_fft) // (n_fft // 4), n_fft // 2 + 1
        assert logit.shape == (2, frames, -(-bins // 8), 1) and logit.dtype == jnp.float32
        # conv_0 (width 8), three dilated convs halving the bins, the (3, 3) conv;
        # widths filters * 2^i capped at max_filters=8.
        assert [f.shape for f in fmaps] == [
            (2, frames, bins, 8), (2, frames, -(-bins // 2), 8), (2, frames, -(-bins // 4), 8),
            (2, frames, -(-bins // 8), 8), (2, frames, -(-bins // 8), 8)]
    # The first conv reads 2 * channels planes (real and imaginary parts).
    v = nn.meta.unbox(params)["params"]["stft_0"]["conv_0"]["weight_v"]
    assert v.shape == (3, 9, 2 * channels, 8)


@pytest.mark.parametrize("channels", [1, 2])
def test_period_discriminator_shapes(channels):
    samples = 601                      # not a multiple of 2 or 3: exercises the reflect pad
    x = _audio(2, samples, channels)
    disc = dm.MultiPeriodDiscriminator(**MPD_KW)
    params = jax.jit(disc.init)(_key(1), x)
    logits, feats = jax.jit(disc.apply)(params, x)
    for p, logit, fmaps in zip(MPD_KW["periods"], logits, feats):
        rows = -(-samples // p)
        r1, r2 = -(-rows // 3), -(-rows // 9)
        assert [f.shape for f in fmaps] == [(2, r1, p, 4), (2, r2, p, 8), (2, r2, p, 8),
                                            (2, r2, p, 1)]
        assert logit.shape == (2, r2, p, 1)
        np.testing.assert_array_equal(logit, fmaps[-1])


def test_combined_discriminator_concatenates_and_grads_are_finite():
    x = _audio(2, 800, 2)
    stft_kw = dict(STFT_KW, n_ffts=(64,))
    mpd_kw = dict(MPD_KW, periods=(3,))
    disc = dm.CombinedDiscriminator((dm.MultiScaleSTFTDiscriminator(**stft_kw),
                                     dm.MultiPeriodDiscriminator(**mpd_kw)))
    params = jax.jit(disc.init)(_key(1), x)
    logits, feats = jax.jit(disc.apply)(params, x)
    assert len(logits) == len(feats) == 2
    assert len(feats[0]) == 5 and len(feats[1]) == 4
    single = jax.jit(dm.MultiPeriodDiscriminator(**mpd_kw).apply)(
        {"params": params["params"]["discriminators_1"]}, x)
    np.testing.assert_allclose(logits[1], single[0][0], rtol=1e-6, atol=1e-6)

    def loss(p, audio):
        real_logits, _ = disc.apply(p, audio)
        fake_logits, _ = disc.apply(p, 0.5 * audio)
        return cl.hinge_discriminator_loss(real_logits, fake_logits)

    g_params, g_audio = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    leaves = jax.tree.leaves(nn.meta.unbox(g_params)) + [g_audio]
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    assert any(float(jnp.abs(leaf).max()) > 0 for leaf in leaves)


def test_weight_norm_params_and_logical_axes():
    x = _audio(1, 300, 1)
    params = dm.MultiPeriodDiscriminator(**MPD_KW).init(_key(0), x)["params"]
    conv = params["period_2"]["conv_1"]
    assert conv["weight_v"].names == (None, None, "conv_in", "conv_out")
    assert conv["weight_g"].names == (None, None, None, "conv_out")
    assert conv["bias"].names == ("conv_out",)
    post = params["period_2"]["conv_post"]
    assert post["weight_v"].names == (None, None, "conv_in", None)
    assert post["weight_g"].names == (None,) * 4 and post["bias"].names == (None,)
    v, g = conv["weight_v"].value, conv["weight_g"].value
    assert v.dtype == g.dtype == jnp.float32
    # The gain starts at ||v|| (per output channel), as torch's weight_norm.
    assert g.shape == (1, 1, 1, v.shape[-1])
    np.testing.assert_allclose(g, np.sqrt((np.asarray(v) ** 2).sum(axis=(0, 1, 2), keepdims=True)),
                               rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    x = _audio(1, 400, 1)
    disc = dm.MultiPeriodDiscriminator(**MPD_KW, dtype=jnp.bfloat16)
    params = jax.jit(disc.init)(_key(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(nn.meta.unbox(params))} == {jnp.dtype("float32")}
    logits, feats = disc.apply(params, x)
    assert logits[0].dtype == jnp.float32 and feats[0][0].dtype == jnp.bfloat16


def _torch_period_discriminator(jax_params, period, channels, kernel=5, stride=3, post_kernel=3):
    """HiFi-GAN's DiscriminatorP written in PyTorch, loaded with our weights."""
    convs = []
    in_ch = 1
    names = [f"conv_{i}" for i in range(len(channels))] + ["conv_post"]
    specs = [(c, kernel, 1 if i == len(channels) - 1 else stride) for i, c in enumerate(channels)]
    specs.append((1, post_kernel, 1))
    for name, (out_ch, k, s) in zip(names, specs):
        conv = torch.nn.Conv2d(in_ch, out_ch, (k, 1), (s, 1), padding=((k - 1) // 2, 0))
        conv = torch.nn.utils.parametrizations.weight_norm(conv, dim=0)
        p = jax_params[name]
        v = torch.from_numpy(np.asarray(p["weight_v"]).transpose(3, 2, 0, 1).copy())
        g = torch.from_numpy(np.asarray(p["weight_g"]).transpose(3, 2, 0, 1).copy())
        with torch.no_grad():
            conv.parametrizations.weight.original0.copy_(g)
            conv.parametrizations.weight.original1.copy_(v)
            conv.bias.copy_(torch.from_numpy(np.array(p["bias"])))
        convs.append(conv)
        in_ch = out_ch

    def forward(x):                                      # x: [b, c, t]
        b, c, t = x.shape
        if t % period:
            x = F.pad(x, (0, period - t % period), "reflect")
        x = x.view(b, c, -1, period)
        fmap = []
        for conv in convs[:-1]:
            x = F.leaky_relu(conv(x), 0.1)
            fmap.append(x)
        x = convs[-1](x)
        fmap.append(x)
        return x, fmap

    return forward


def test_period_discriminator_matches_pytorch():
    period, channels = 3, (4, 8, 16, 16)
    x = np.asarray(_audio(2, 700, 1, seed=3))
    disc = dm.PeriodDiscriminator(period, channels=channels)
    params = nn.meta.unbox(jax.jit(disc.init)(_key(5), x))
    # Move the gains away from ||v|| so the test sees the normalization at work.
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a * 1.7 if "weight_g" in jax.tree_util.keystr(path) else a, params)
    logits, feats = disc.apply(params, x)
    ref_logits, ref_feats = _torch_period_discriminator(params["params"], period, channels)(
        torch.from_numpy(x.transpose(0, 2, 1).copy()))
    np.testing.assert_allclose(logits, ref_logits.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)
    for ours, ref in zip(feats, ref_feats):
        np.testing.assert_allclose(ours, ref.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_stft_planes_match_torch_stft():
    n_fft, hop = 128, 32
    x = np.asarray(_audio(2, 1000, 2, seed=4))
    ours = np.asarray(dm.stft_planes(x, n_fft, hop))             # [b, frames, bins, 2c]
    window = torch.hann_window(n_fft)                             # periodic, as ours
    ref = torch.stft(torch.from_numpy(x.transpose(0, 2, 1).reshape(4, -1).copy()), n_fft, hop,
                     window=window, center=False, normalized=False, return_complex=True)
    ref = (ref / window.pow(2).sum().sqrt()).numpy().reshape(2, 2, n_fft // 2 + 1, -1)
    ref = np.concatenate([ref.real, ref.imag], axis=1).transpose(0, 3, 2, 1)  # [b, frames, bins, 2c]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def _torch_weight_norm_conv(p, **kw):
    """A weight-normalized torch Conv2d holding our params (layouts: `_WeightNormConv2d`)."""
    v = torch.from_numpy(np.asarray(p["weight_v"]).transpose(3, 2, 0, 1).copy())
    conv = torch.nn.Conv2d(v.shape[1], v.shape[0], tuple(v.shape[2:]), **kw)
    conv = torch.nn.utils.parametrizations.weight_norm(conv, dim=0)
    g = torch.from_numpy(np.asarray(p["weight_g"]).transpose(3, 2, 0, 1).copy())
    with torch.no_grad():
        conv.parametrizations.weight.original0.copy_(g)
        conv.parametrizations.weight.original1.copy_(v)
        conv.bias.copy_(torch.from_numpy(np.array(p["bias"])))
    return conv


def _torch_stft_discriminator(p, n_fft, hop, win, kernel=(3, 9), dilations=(1, 2, 4),
                              stride=(1, 2), slope=0.2):
    """audiocraft's `DiscriminatorSTFT` (EnCodec's MS-STFTD, filters_scale=1), written
    out in torch: torchaudio's Spectrogram(center=False, normalized=True, power=None),
    [real, imag] planes, (time, freq) convs with `get_2d_padding` padding."""
    def pad(k, d=(1, 1)):
        return ((k[0] - 1) * d[0] // 2, (k[1] - 1) * d[1] // 2)

    square = (kernel[0], kernel[0])
    convs = [_torch_weight_norm_conv(p["conv_0"], padding=pad(kernel))]
    for i, d in enumerate(dilations):
        convs.append(_torch_weight_norm_conv(p[f"conv_{i + 1}"], stride=stride, dilation=(d, 1),
                                             padding=pad(kernel, (d, 1))))
    convs.append(_torch_weight_norm_conv(p[f"conv_{len(dilations) + 1}"], padding=pad(square)))
    post = _torch_weight_norm_conv(p["conv_post"], padding=pad(square))
    window = torch.hann_window(win, dtype=torch.float64)

    def forward(x):                                          # [b, c, t] float64
        b, c, t = x.shape
        z = torch.stft(x.reshape(b * c, t), n_fft, hop, win, window=window, center=False,
                       return_complex=True) / window.pow(2).sum().sqrt()
        z = z.reshape(b, c, *z.shape[1:])                    # [b, c, freq, frames]
        z = torch.cat([z.real, z.imag], dim=1).transpose(2, 3).float()   # b c t w
        fmap = []
        for conv in convs:
            z = F.leaky_relu(conv(z), slope)
            fmap.append(z)
        return post(z), fmap

    return forward


def test_stft_discriminator_matches_audiocraft_in_torch():
    """Forward (logits and every feature map) and the input gradient of the
    multi-scale STFT discriminator against audiocraft's, with the same weights;
    one resolution has a window shorter than n_fft (centred in the frame)."""
    kw = dict(n_ffts=(128, 64), hop_lengths=(32, 16), win_lengths=(96, 64), filters=4,
              max_filters=8)
    disc = dm.MultiScaleSTFTDiscriminator(**kw)
    x = np.asarray(_audio(2, 700, 2, seed=6))
    params = nn.meta.unbox(jax.jit(disc.init)(_key(2), x))
    # Gains away from ||v||, so the normalization itself is compared.
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a * 1.3 if "weight_g" in jax.tree_util.keystr(path) else a, params)
    logits, feats = jax.jit(disc.apply)(params, x)

    def to_nhwc(t):
        return t.detach().numpy().transpose(0, 2, 3, 1)

    xt = torch.from_numpy(x.transpose(0, 2, 1).astype(np.float64)).requires_grad_(True)
    torch_total = 0.0
    for i, (n_fft, hop, win) in enumerate(zip(kw["n_ffts"], kw["hop_lengths"],
                                              kw["win_lengths"])):
        ref_logits, ref_feats = _torch_stft_discriminator(params["params"][f"stft_{i}"], n_fft,
                                                          hop, win)(xt)
        assert logits[i].shape == to_nhwc(ref_logits).shape
        scale = float(np.abs(to_nhwc(ref_logits)).max())
        np.testing.assert_allclose(logits[i], to_nhwc(ref_logits), atol=2e-5 * scale)
        assert len(feats[i]) == len(ref_feats) == 5
        for ours, ref in zip(feats[i], ref_feats):
            ref = to_nhwc(ref)
            np.testing.assert_allclose(ours, ref, atol=2e-5 * float(np.abs(ref).max()))
        torch_total = torch_total + ref_logits.sum()
    torch_total.backward()
    ref_grad = xt.grad.numpy().transpose(0, 2, 1)

    def total(params, audio):
        out, _ = disc.apply(params, audio)
        return sum(jnp.sum(o) for o in out)

    g_params, g_audio = jax.jit(jax.grad(total, argnums=(0, 1)))(params, x)
    np.testing.assert_allclose(g_audio, ref_grad, atol=1e-4 * float(np.abs(ref_grad).max()))
    # Every parameter of every resolution gets a gradient.
    for path, g in jax.tree_util.tree_leaves_with_path(g_params):
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)


def test_resolution_discriminator_shapes():
    """Stereo here (two channels give four planes); mono in the vocos parity test."""
    samples, channels = 600, 2
    x = _audio(2, samples, channels)
    disc = dm.MultiResolutionDiscriminator(**MRD_KW)
    params = jax.jit(disc.init)(_key(1), x)
    logits, feats = jax.jit(disc.apply)(params, x)
    assert len(logits) == len(feats) == 1
    for window, logit, fmaps in zip(MRD_KW["window_lengths"], logits, feats):
        frames, bins = 1 + samples // (window // 4), window // 2 + 1
        widths = [hi - lo for lo, hi in dm.band_edges(bins)]
        assert sum(widths) == bins and min(widths) > 0
        # Per band: three stride-2 convs, then the (3, 3) conv (convs 1..4 recorded).
        expected = []
        for w in widths:
            halved = [-(-w // 2), -(-w // 4), -(-w // 8)]
            expected += [(2, frames, h, 4) for h in halved + halved[-1:]]
        out_bins = sum(-(-w // 8) for w in widths)
        assert [f.shape for f in fmaps] == expected + [(2, frames, out_bins, 1)]
        assert logit.shape == (2, frames, out_bins, 1) and logit.dtype == jnp.float32
        np.testing.assert_array_equal(logit, fmaps[-1])
    # The first band conv reads 2 * channels planes (real and imaginary parts).
    p = nn.meta.unbox(params)["params"]["resolution_0"]
    assert p["band_0_conv_0"]["weight_v"].shape == (3, 9, 2 * channels, 4)
    assert sorted(p) == sorted([f"band_{b}_conv_{j}" for b in range(5) for j in range(5)]
                               + ["conv_post"])


def test_resolution_planes_normalize_level_and_offset():
    """DC removal and peak normalization: a scaled, offset copy of a clip gives
    the same planes."""
    x = _audio(2, 700, 1, seed=2)
    a = dm.resolution_planes(x, 128)
    b = dm.resolution_planes(3.0 * x + 0.5, 128)
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(a).max()))
    assert a.shape == (2, 1 + 700 // 32, 65, 2)


def _vocos_discriminators():
    """`vocos.discriminators`, with a stand-in for torchaudio's C++ extension
    (it does not load against this torch; the discriminators need none of it)."""
    shim = types.ModuleType("torchaudio._extension")
    shim._IS_TORCHAUDIO_EXT_AVAILABLE = False
    shim.fail_if_no_align = lambda f: f
    shim.__spec__ = importlib.machinery.ModuleSpec("torchaudio._extension", None)
    sys.modules.setdefault("torchaudio._extension", shim)
    pytest.importorskip("vocos")
    return pytest.importorskip("vocos.discriminators")


def _load_vocos_conv(conv, p):
    """Our `_WeightNormConv2d` params into a conv wrapped by torch's (old) `weight_norm`."""
    with torch.no_grad():
        conv.weight_v.copy_(torch.from_numpy(np.asarray(p["weight_v"]).transpose(3, 2, 0, 1).copy()))
        conv.weight_g.copy_(torch.from_numpy(np.asarray(p["weight_g"]).transpose(3, 2, 0, 1).copy()))
        conv.bias.copy_(torch.from_numpy(np.array(p["bias"])))


def _scaled_gains(params, factor):
    """Gains away from ||v||, so the comparison sees the normalization at work."""
    return jax.tree_util.tree_map_with_path(
        lambda path, a: a * factor if "weight_g" in jax.tree_util.keystr(path) else a, params)


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def test_resolution_discriminator_matches_vocos():
    """Logits, every feature map and the input gradient against vocos's
    `DiscriminatorR` (the MRD vocos trains with) holding our random weights."""
    vd = _vocos_discriminators()
    window, channels = 128, 4
    x = np.asarray(_audio(2, 700, 1, seed=13)) + 0.05   # with a DC offset to remove
    disc = dm.ResolutionDiscriminator(window_length=window, channels=channels)
    params = _scaled_gains(nn.meta.unbox(jax.jit(disc.init)(_key(3), x)), 1.4)
    ref = vd.DiscriminatorR(window_length=window, channels=channels)
    for b, stack in enumerate(ref.band_convs):
        for j, conv in enumerate(stack):
            _load_vocos_conv(conv, params["params"][f"band_{b}_conv_{j}"])
    _load_vocos_conv(ref.conv_post, params["params"]["conv_post"])

    xt = torch.from_numpy(x[..., 0].copy()).requires_grad_(True)
    ref_logits, ref_feats = ref(xt)
    logits, feats = jax.jit(disc.apply)(params, x)
    scale = float(np.abs(_nhwc(ref_logits)).max())
    np.testing.assert_allclose(logits, _nhwc(ref_logits), atol=1e-4 * scale)
    assert len(feats) == len(ref_feats) == 21
    for ours, theirs in zip(feats, ref_feats):
        theirs = _nhwc(theirs)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=1e-4 * float(np.abs(theirs).max()))

    ref_logits.square().sum().backward()
    ref_grad = xt.grad.numpy()
    grad = jax.jit(jax.grad(lambda a: jnp.sum(disc.apply(params, a)[0] ** 2)))(x)[..., 0]
    np.testing.assert_allclose(grad, ref_grad, atol=1e-4 * float(np.abs(ref_grad).max()))


def test_period_discriminator_matches_vocos():
    """HiFi-GAN's period discriminator as vocos has it (`DiscriminatorP`, channels
    32..1024 fixed): same logits. vocos's feature maps skip the first conv's
    activation, which ours (and HiFi-GAN's) keep: ours[1:] are vocos's."""
    vd = _vocos_discriminators()
    period = 3
    x = np.asarray(_audio(2, 500, 1, seed=14))              # 500 % 3 != 0: reflect pad
    disc = dm.PeriodDiscriminator(period)
    params = _scaled_gains(nn.meta.unbox(jax.jit(disc.init)(_key(4), x)), 0.8)
    ref = vd.DiscriminatorP(period=period)
    for i, conv in enumerate(ref.convs):
        _load_vocos_conv(conv, params["params"][f"conv_{i}"])
    _load_vocos_conv(ref.conv_post, params["params"]["conv_post"])
    with torch.no_grad():
        ref_logits, ref_feats = ref(torch.from_numpy(x[..., 0].copy()))
    logits, feats = jax.jit(disc.apply)(params, x)
    np.testing.assert_allclose(np.asarray(logits).reshape(2, -1), ref_logits.numpy(),
                               atol=1e-4 * float(np.abs(ref_logits.numpy()).max()))
    assert len(feats) == len(ref_feats) + 1
    for ours, theirs in zip(feats[1:], ref_feats):
        theirs = _nhwc(theirs)
        np.testing.assert_allclose(ours, theirs, atol=1e-4 * float(np.abs(theirs).max()))


# ------------------------------------------------------------------------- losses


def test_hinge_losses_known_values():
    real = [jnp.array([2.0, 0.5, -1.0]), jnp.array([[0.0]])]
    fake = [jnp.array([-2.0, 0.0, 1.0]), jnp.array([[-0.5]])]
    # disc 0: real relu(1-r) = [0, .5, 2] -> 5/6; fake relu(1+f) = [0, 1, 2] -> 1
    # disc 1: real 1; fake 0.5
    expected = ((5 / 6 + 1.0) + (1.0 + 0.5)) / 2
    np.testing.assert_allclose(cl.hinge_discriminator_loss(real, fake), expected, rtol=1e-6)
    # generator, clipped: relu(1 - f) = [3, 1, 0] -> 4/3 and 1.5
    np.testing.assert_allclose(cl.hinge_generator_loss(fake), (4 / 3 + 1.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(cl.hinge_generator_loss(fake, clipped=False), (1 / 3 + 0.5) / 2,
                               rtol=1e-6)
    np.testing.assert_allclose(cl.hinge_generator_loss(jnp.array([3.0, 1.0])), 0.0)


def test_feature_matching():
    feats = [[jnp.ones((2, 3, 4)), -2 * jnp.ones((2, 5))], [jnp.arange(6.0).reshape(2, 3)]]
    assert float(cl.feature_matching_loss(feats, feats)) == 0.0
    fake = [[jnp.zeros((2, 3, 4)), -2 * jnp.ones((2, 5))], [jnp.arange(6.0).reshape(2, 3)]]
    # Layer 0 of disc 0 is off by its own mean magnitude (relative error 1).
    np.testing.assert_allclose(cl.feature_matching_loss(feats, fake), (1.0 / 2 + 0.0) / 2,
                               rtol=1e-6)
    # Relative: scaling both real and fake scales nothing.
    scaled = jax.tree.map(lambda a: 10 * a, (feats, fake))
    np.testing.assert_allclose(cl.feature_matching_loss(*scaled),
                               cl.feature_matching_loss(feats, fake), rtol=1e-6)


@pytest.fixture(scope="module")
def clip():
    t = np.arange(4096) / SR
    x = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)
    return jnp.asarray(np.stack([x, 0.5 * x])[..., None], jnp.float32)   # [2, 4096, 1]


def test_mel_loss_zero_for_identical_and_grows_with_noise(clip):
    loss = jax.jit(lambda a, b: cl.multi_resolution_mel_loss(a, b, SR))
    # Not bit-exact zero: XLA may fuse the two (identical) branches differently.
    assert float(loss(clip, clip)) < 1e-12
    noise = jnp.asarray(np.random.default_rng(0).standard_normal(clip.shape), jnp.float32)
    values = [float(loss(clip + s * noise, clip)) for s in (0.001, 0.01, 0.1)]
    assert 0 < values[0] < values[1] < values[2]
    grad = jax.jit(jax.grad(lambda a: cl.multi_resolution_mel_loss(a, clip, SR)))(clip + 0.01 * noise)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def _numpy_mel_term(x, y, n_fft, n_mels, normalized=True, floor=1e-5):
    """One scale of EnCodec's mel loss from numpy + librosa's filterbank."""
    hop = n_fft // 4
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    fb = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, htk=True, norm=None)

    def mel(a):
        pad = (n_fft - hop) // 2
        a = np.pad(a.astype(np.float64), (pad, pad), mode="reflect")
        frames = int(np.ceil((a.size - n_fft) / hop)) + 1
        a = np.pad(a, (0, (frames - 1) * hop + n_fft - a.size))
        idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)
        power = np.abs(np.fft.rfft(a[idx] * window, axis=-1)) ** 2
        if normalized:
            power /= np.sum(window ** 2)
        return power @ fb.T

    mx, my = mel(x), mel(y)
    assert mx.shape[0] == -(-x.size // hop)                  # ceil(samples / hop) frames
    return np.mean(np.abs(mx - my)), np.mean((np.log10(floor + mx) - np.log10(floor + my)) ** 2)


def test_mel_loss_matches_numpy_librosa(clip):
    x = np.asarray(clip[0, :, 0])
    y = x + 0.05 * np.random.default_rng(0).standard_normal(x.size).astype(np.float32)
    l1, l2 = _numpy_mel_term(x, y, 256, 64)
    ours = cl.multi_resolution_mel_loss(x[None], y[None], SR, range_start=8, range_end=8)
    np.testing.assert_allclose(ours, (l1 + l2) / 2, rtol=1e-4)
    ours = cl.multi_resolution_mel_loss(x[None], y[None], SR, range_start=8, range_end=8,
                                        normalized=False, alphas=True)
    l1, l2 = _numpy_mel_term(x, y, 256, 64, normalized=False)
    np.testing.assert_allclose(ours, l1 + np.sqrt(255) * l2, rtol=1e-4)


def test_stft_loss_and_time_l1(clip):
    kw = dict(n_ffts=(256, 128), hop_lengths=(64, 32), win_lengths=(200, 128))
    assert float(cl.multi_resolution_stft_loss(clip, clip, **kw)) == pytest.approx(0.0, abs=1e-6)
    noise = jnp.asarray(np.random.default_rng(1).standard_normal(clip.shape), jnp.float32)
    small, big = (float(cl.multi_resolution_stft_loss(clip + s * noise, clip, **kw))
                  for s in (0.01, 0.1))
    assert 0 < small < big
    # Spectral convergence alone of a scaled estimate: ||(a-1)|Y|||/||Y|| = |a - 1|.
    sc = cl.multi_resolution_stft_loss(0.5 * clip, clip, **kw, factor_mag=0.0)
    np.testing.assert_allclose(sc, 0.5, rtol=1e-3)
    np.testing.assert_allclose(cl.time_l1(clip + 0.25, clip), 0.25, rtol=1e-6)


# ----------------------------------------------------------------------- balancer


def _two_losses(target):
    """Loss a on the first half of y, loss b (1000x larger scale) on the second:
    their gradients have disjoint supports, so each one's share of the combined
    gradient can be read off the combined gradient itself."""
    half = target.shape[1] // 2

    def losses_fn(y):
        return {"a": jnp.mean(jnp.abs(y[:, :half] - target[:, :half])),
                "b": 1000.0 * jnp.mean(jnp.square(y[:, half:] - target[:, half:]))}

    return losses_fn, half


def _per_item_norm(g):
    return float(jnp.mean(jnp.sqrt(jnp.sum(g ** 2, axis=tuple(range(1, g.ndim))))))


def test_balancer_contributions_follow_weights():
    y = _audio(3, 200, 1, seed=7)
    target = _audio(3, 200, 1, seed=8)
    losses_fn, half = _two_losses(target)
    weights = {"a": 1.0, "b": 3.0}
    balancer = cl.LossBalancer(weights)
    state = balancer.init()
    grad, state1, metrics = jax.jit(
        lambda y, s: balancer.balanced_output_grad(losses_fn, y, s))(y, state)
    assert grad.shape == y.shape and grad.dtype == y.dtype
    norm_a, norm_b = _per_item_norm(grad[:, :half]), _per_item_norm(grad[:, half:])
    # First EMA step: the average is the norm itself, so the shares are exact.
    np.testing.assert_allclose(norm_a / norm_b, 1.0 / 3.0, rtol=1e-5)
    np.testing.assert_allclose([norm_a, norm_b], [0.25, 0.75], rtol=1e-5)   # total_norm * w / sum
    # Raw gradient norms differ by orders of magnitude; the balanced ones do not.
    assert float(metrics["grad_norm_b"]) > 30 * float(metrics["grad_norm_a"])
    np.testing.assert_allclose(metrics["a"], losses_fn(y)["a"], rtol=1e-6)
    np.testing.assert_allclose(metrics["effective_loss"],
                               metrics["scale_a"] * metrics["a"] + metrics["scale_b"] * metrics["b"],
                               rtol=1e-5)
    np.testing.assert_allclose(state1["weight_sum"]["a"], 1.0)

    # Second step: the EMA mixes both norms with the bias-corrected weights.
    y2 = 2.0 * y
    _, state2, metrics2 = balancer.balanced_output_grad(losses_fn, y2, state1)
    n1, n2 = float(metrics["grad_norm_b"]), float(metrics2["grad_norm_b"])
    expected_avg = (0.999 * n1 + n2) / (0.999 + 1.0)
    np.testing.assert_allclose(metrics2["scale_b"], 0.75 / expected_avg, rtol=1e-5)
    np.testing.assert_allclose(state2["norm_sum"]["b"], 0.999 * n1 + n2, rtol=1e-5)


def test_balancer_without_balancing_is_weighted_sum():
    y = _audio(2, 100, 2, seed=9)
    target = _audio(2, 100, 2, seed=10)
    losses_fn, _ = _two_losses(target)
    weights = {"a": 0.5, "b": 2.0}
    balancer = cl.LossBalancer(weights, balance_grads=False)
    grad, _, metrics = balancer.balanced_output_grad(losses_fn, y, balancer.init())
    expected = jax.grad(lambda y: sum(w * losses_fn(y)[k] for k, w in weights.items()))(y)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(metrics["effective_loss"],
                               0.5 * metrics["a"] + 2.0 * metrics["b"], rtol=1e-6)


def test_balancer_zero_weight_aux_and_generator_vjp():
    """The documented pattern: balanced output cotangent + an unbalanced loss,
    back-propagated through a toy generator in one vjp."""
    x = _audio(2, 64, 1, seed=11)
    target = _audio(2, 64, 1, seed=12)
    params = {"w": jnp.float32(0.7), "b": jnp.float32(0.1)}

    def generator(p):
        y = p["w"] * x + p["b"]
        return y, jnp.square(p["b"])                          # (output, "commitment" loss)

    def losses_fn(y):
        return {"l1": cl.time_l1(y, target), "unused": jnp.sum(y)}, {"peak": jnp.abs(y).max()}

    balancer = cl.LossBalancer({"l1": 1.0, "unused": 0.0}, balance_grads=False)
    (y, commit), gen_vjp = jax.vjp(generator, params)
    g_y, state, metrics, aux = balancer.balanced_output_grad(losses_fn, y, balancer.init(),
                                                             has_aux=True)
    (grads,) = gen_vjp((g_y, jnp.float32(0.3)))
    expected = jax.grad(lambda p: cl.time_l1(generator(p)[0], target) + 0.3 * generator(p)[1])(params)
    for k in params:
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-5)
    assert "unused" in metrics and "scale_unused" not in metrics and "peak" in aux
    assert float(state["weight_sum"]["unused"]) == 0.0


def test_balancer_rejects_unknown_loss():
    balancer = cl.LossBalancer({"a": 1.0})
    with pytest.raises(KeyError):
        balancer.balanced_output_grad(lambda y: {"a": jnp.sum(y), "b": jnp.sum(y)},
                                      jnp.ones((2, 3)), balancer.init())
