r"""GAN discriminators in JAX vs PyTorch on the same CPU, same weights.

    python benchmarks/discriminator_speed.py [--only msstft-tiny,mpd,...]
        [--widths vocos|tiny] [--batch 8] [--seconds 0.5] [--sample-rate 24000] [--repeats 5]
        [--threads 2] [--profile] [--textbook-conv] [--no-hugepages]

Discriminators (`--only` picks some):

* `msstft-tiny`: EnCodec's multi-scale STFT discriminator with the tiny
  codec's settings (configs/codec/tiny.py: n_ffts 512/256/128, 8 filters).
* `msstft-encodec`: the same with EnCodec's defaults (n_ffts
  1024/2048/512/256/128, 32 filters).
* `mpd`: HiFi-GAN's multi-period discriminator, periods 2/3/5/7/11, channels
  32/128/512/1024/1024.
* `mrd`: vocos's multi-resolution discriminator, windows 2048/1024/512, 32
  channels, 5 bands.

`--widths tiny` sizes `mpd` and `mrd` as the tiny vocoder trains them
(configs/vocoder/tiny.py: channels 16/32/64/128/128, MRD 16 channels on its
windows) instead of vocos's own widths.

The PyTorch side: for the MS-STFT discriminator a compact rewrite of
audiocraft's `DiscriminatorSTFT` (audiocraft is not installed): weight-normed
`Conv2d`s with `get_2d_padding`, `torch.stft(center=False)` divided by the
window norm (torchaudio's `Spectrogram(normalized=True)`); for MPD and MRD the
`vocos` package's `DiscriminatorP` / `DiscriminatorR` themselves. Our random
weights are copied into them, and the logits are checked (within 1e-4) before
anything is timed; the losses and the generator-side input gradients of both
are printed too. Their float32 differences are rounding, checked once at
batch 8 against torch in float64: for the 32-filter MS-STFT ours is within
4e-7 of it (of the peak), torch's float32 within 2e-3; for the MPD both
float32 gradients are off by up to ~1e-2 (ill-conditioned), while ours in
float64 is within 1e-8 of torch's float64.

Two measurements, JAX and torch interleaved repeat by repeat, the min of
`--repeats` reported (a shared machine's noise hits both alike):

* `disc`: a discriminator update: forward on real and on fake audio, hinge
  loss, gradient w.r.t. the discriminator params (no optimizer).
* `gen`: the generator's share: forward on fake audio, hinge generator loss,
  gradient w.r.t. that audio (the discriminator params get none; torch's have
  `requires_grad=False`).

FLOPs are XLA's count for the compiled JAX program (`cost_analysis`); both
sides' GFLOP/s divide that count by their own time.

`--profile` adds per sub-discriminator timings of both measurements (JAX and
torch) and, for JAX, every conv layer's forward, input gradient and kernel
gradient, with `conv2d` against the textbook `lax.conv_general_dilated`.
`--textbook-conv` also times the JAX programs on the textbook convolution
(the code before `audiolm_jax.layers.conv.conv2d`), interleaved with the
others, for before/after tables measured under the same machine load.

Huge pages: as benchmarks/codec_speed.py, the script re-executes itself with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` unless `--no-hugepages`.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.machinery
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax import losses
from audiolm_jax.layers import conv as conv_lib
from audiolm_jax.models.gan import discriminators as dm

NAMES = ("msstft-tiny", "msstft-encodec", "mpd", "mrd")


# ----------------------------------------------------------------------------- torch side


def import_vocos_discriminators():
    """`vocos.discriminators`, importable without torchaudio's C++ extension.

    vocos imports torchaudio, whose `_extension` module fails to load against
    this torch build; the discriminators only need `Spectrogram` (pure torch), so
    a stand-in extension module is enough.
    """
    shim = types.ModuleType("torchaudio._extension")
    shim._IS_TORCHAUDIO_EXT_AVAILABLE = False
    shim.fail_if_no_align = lambda f: f
    shim.__spec__ = importlib.machinery.ModuleSpec("torchaudio._extension", None)
    sys.modules.setdefault("torchaudio._extension", shim)
    from vocos import discriminators
    return discriminators


def load_conv(conv, params: dict) -> None:
    """Copies one `_WeightNormConv2d`'s params into a weight-normed torch Conv2d
    (either weight-norm API: `parametrizations` or the older weight_g/weight_v)."""
    import torch

    v = torch.from_numpy(np.asarray(params["weight_v"]).transpose(3, 2, 0, 1).copy())
    g = torch.from_numpy(np.asarray(params["weight_g"]).transpose(3, 2, 0, 1).copy())
    with torch.no_grad():
        if hasattr(conv, "parametrizations"):
            conv.parametrizations.weight.original0.copy_(g)
            conv.parametrizations.weight.original1.copy_(v)
        else:
            conv.weight_g.copy_(g)
            conv.weight_v.copy_(v)
        conv.bias.copy_(torch.from_numpy(np.array(params["bias"])))


def torch_msstft(params: dict, n_ffts, filters: int):
    """audiocraft's MultiScaleSTFTDiscriminator (filters_scale 1), written out in torch.

    Returns a module mapping [batch, channels, samples] to a list of logits
    [batch, 1, frames, bins'] (one per resolution).
    """
    import torch
    import torch.nn.functional as F

    def wn_conv(p, kernel, stride=(1, 1), dilation=(1, 1)):
        pad = tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation))
        v = p["weight_v"]
        conv = torch.nn.Conv2d(v.shape[2], v.shape[3], kernel, stride, pad, dilation)
        conv = torch.nn.utils.parametrizations.weight_norm(conv, dim=0)
        load_conv(conv, p)
        return conv

    class STFTDisc(torch.nn.Module):
        def __init__(self, p, n_fft):
            super().__init__()
            self.n_fft, self.hop = n_fft, n_fft // 4
            self.register_buffer("window", torch.hann_window(n_fft))
            convs = [wn_conv(p["conv_0"], (3, 9))]
            convs += [wn_conv(p[f"conv_{i + 1}"], (3, 9), (1, 2), (d, 1))
                      for i, d in enumerate((1, 2, 4))]
            convs.append(wn_conv(p["conv_4"], (3, 3)))
            self.convs = torch.nn.ModuleList(convs)
            self.post = wn_conv(p["conv_post"], (3, 3))

        def forward(self, x):                                  # [b, c, t]
            b, c, t = x.shape
            z = torch.stft(x.reshape(b * c, t), self.n_fft, self.hop, window=self.window,
                           center=False, return_complex=True)
            z = z / self.window.pow(2).sum().sqrt()           # Spectrogram(normalized=True)
            z = z.reshape(b, c, *z.shape[1:])                  # [b, c, freq, frames]
            # audiocraft leaves the transposed view to the first conv; made contiguous
            # here, which makes torch's step ~1.4x faster (the comparison takes the faster).
            z = torch.cat([z.real, z.imag], dim=1).transpose(2, 3).contiguous()  # b 2c t f
            for conv in self.convs:
                z = F.leaky_relu(conv(z), 0.2)
            return self.post(z)

    class Multi(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.discs = torch.nn.ModuleList(STFTDisc(params[f"stft_{i}"], n)
                                             for i, n in enumerate(n_ffts))

        def forward(self, x):
            return [d(x) for d in self.discs]

    return Multi()


def torch_mpd(params: dict, periods, channels=(32, 128, 512, 1024, 1024)):
    """vocos's DiscriminatorP per period, loaded with our weights; [b, 1, t] -> logits.
    Other widths than vocos's: its convs rebuilt at those widths, its layout kept."""
    import torch

    vd = import_vocos_discriminators()

    def period_discriminator(p):
        d = vd.DiscriminatorP(period=p)
        if tuple(channels) != (32, 128, 512, 1024, 1024):
            widths = (1, *channels)
            d.convs = torch.nn.ModuleList(
                torch.nn.utils.weight_norm(torch.nn.Conv2d(
                    widths[i], widths[i + 1], (5, 1), (1 if i == len(channels) - 1 else 3, 1),
                    padding=(2, 0))) for i in range(len(channels)))
            d.conv_post = torch.nn.utils.weight_norm(torch.nn.Conv2d(channels[-1], 1, (3, 1),
                                                                     1, padding=(1, 0)))
        return d

    class Multi(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.discs = torch.nn.ModuleList(period_discriminator(p) for p in periods)
            for p, d in zip(periods, self.discs):
                sub = params[f"period_{p}"]
                for i, conv in enumerate(d.convs):
                    load_conv(conv, sub[f"conv_{i}"])
                load_conv(d.conv_post, sub["conv_post"])

        def forward(self, x):
            return [d(x[:, 0])[0] for d in self.discs]        # flattened [b, rows * period]

    return Multi()


def torch_mrd(params: dict, windows, channels: int):
    """vocos's DiscriminatorR per window, loaded with our weights; [b, 1, t] -> logits."""
    import torch

    vd = import_vocos_discriminators()

    class Multi(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.discs = torch.nn.ModuleList(vd.DiscriminatorR(window_length=w, channels=channels)
                                             for w in windows)
            for i, d in enumerate(self.discs):
                load_resolution(d, params[f"resolution_{i}"])

        def forward(self, x):
            return [d(x[:, 0])[0] for d in self.discs]        # [b, 1, frames, bins']

    return Multi()


def load_resolution(torch_disc, params: dict) -> None:
    """Our `ResolutionDiscriminator` params into vocos's `DiscriminatorR`."""
    for b, stack in enumerate(torch_disc.band_convs):
        for j, conv in enumerate(stack):
            load_conv(conv, params[f"band_{b}_conv_{j}"])
    load_conv(torch_disc.conv_post, params["conv_post"])


def vocoder_widths(widths: str) -> dict:
    """MPD channels, MRD channels and MRD windows: vocos's, or the tiny vocoder's config."""
    if widths == "vocos":
        return dict(period_channels=(32, 128, 512, 1024, 1024), mrd_channels=32,
                    mrd_windows=(2048, 1024, 512))
    from configs.vocoder import tiny

    d = tiny.get_config().discriminator
    return dict(period_channels=tuple(d.period_channels), mrd_channels=d.mrd_channels,
                mrd_windows=tuple(d.mrd_window_lengths))


def build(name: str, audio: np.ndarray, key: jax.Array, widths: str = "vocos"):
    """(JAX module, its params, torch module with those weights, sub-discriminator
    builders) for one benchmark entry."""
    sizes = vocoder_widths(widths)
    if name.startswith("msstft"):
        n_ffts, filters = ((512, 256, 128), 8) if name == "msstft-tiny" else (
            (1024, 2048, 512, 256, 128), 32)
        disc = dm.MultiScaleSTFTDiscriminator(n_ffts=n_ffts, filters=filters)
        params = nn.meta.unbox(jax.jit(disc.init)(key, audio))["params"]
        parts = [(f"n_fft {n}", dm.MultiScaleSTFTDiscriminator(n_ffts=(n,), filters=filters),
                  {"stft_0": params[f"stft_{i}"]}, lambda i=i: torch_msstft(
                      {"stft_0": params[f"stft_{i}"]}, (n_ffts[i],), filters))
                 for i, n in enumerate(n_ffts)]
        return disc, params, torch_msstft(params, n_ffts, filters), parts
    if name == "mpd":
        periods, channels = (2, 3, 5, 7, 11), sizes["period_channels"]
        disc = dm.MultiPeriodDiscriminator(periods=periods, channels=channels)
        params = nn.meta.unbox(jax.jit(disc.init)(key, audio))["params"]
        parts = [(f"period {p}", dm.MultiPeriodDiscriminator(periods=(p,), channels=channels),
                  {f"period_{p}": params[f"period_{p}"]},
                  lambda p=p: torch_mpd(params, (p,), channels)) for p in periods]
        return disc, params, torch_mpd(params, periods, channels), parts
    if name == "mrd":
        windows, channels = sizes["mrd_windows"], sizes["mrd_channels"]
        disc = dm.MultiResolutionDiscriminator(window_lengths=windows, channels=channels)
        params = nn.meta.unbox(jax.jit(disc.init)(key, audio))["params"]
        parts = [(f"window {w}", dm.MultiResolutionDiscriminator(window_lengths=(w,),
                                                                  channels=channels),
                  {"resolution_0": params[f"resolution_{i}"]},
                  lambda i=i, w=w: torch_mrd({"resolution_0": params[f"resolution_{i}"]},
                                             (w,), channels))
                 for i, w in enumerate(windows)]
        return disc, params, torch_mrd(params, windows, channels), parts
    raise ValueError(f"unknown discriminator {name!r}; expected one of {NAMES}")


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Min time of each fn, alternating between them repeat by repeat."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            best[k] = min(best[k], timed(fn))
    return best


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", float("nan")))


def jax_programs(disc: nn.Module, params: dict, real: jax.Array, fake: jax.Array):
    """Compiled (disc step, generator-side step) and their XLA FLOP counts."""

    def disc_loss(p, real, fake):
        real_logits, _ = disc.apply({"params": p}, real)
        fake_logits, _ = disc.apply({"params": p}, fake)
        return losses.hinge_discriminator_loss(real_logits, fake_logits)

    def gen_loss(fake, p):
        fake_logits, _ = disc.apply({"params": p}, fake)
        return losses.hinge_generator_loss(fake_logits)

    d_step = jax.jit(jax.value_and_grad(disc_loss)).lower(params, real, fake).compile()
    g_step = jax.jit(jax.value_and_grad(gen_loss)).lower(fake, params).compile()
    return {"disc": (lambda: jax.block_until_ready(d_step(params, real, fake)), flops_of(d_step)),
            "gen": (lambda: jax.block_until_ready(g_step(fake, params)), flops_of(g_step)),
            "disc_fn": lambda: d_step(params, real, fake), "gen_fn": lambda: g_step(fake, params)}


def torch_programs(module, real: np.ndarray, fake: np.ndarray):
    """(disc step, generator-side step) closures of a torch discriminator, plus
    one-shot evaluators of the same values for the parity check."""
    import torch

    def to_torch(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1)))

    real_t, fake_t = to_torch(real), to_torch(fake)
    fake_g = fake_t.clone().requires_grad_(True)
    params = list(module.parameters())

    def hinge_d(real_logits, fake_logits):
        terms = [torch.relu(1 - r).mean() + torch.relu(1 + f).mean()
                 for r, f in zip(real_logits, fake_logits)]
        return sum(terms) / len(terms)

    def hinge_g(fake_logits):
        return sum(torch.relu(1 - f).mean() for f in fake_logits) / len(fake_logits)

    def disc_step():
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        loss = hinge_d(module(real_t), module(fake_t))
        loss.backward()
        return loss.item()

    def gen_step():
        for p in params:
            p.requires_grad_(False)
        fake_g.grad = None
        loss = hinge_g(module(fake_g))
        loss.backward()
        return loss.item(), fake_g.grad

    def logits(x):
        with torch.no_grad():
            return [t.numpy() for t in module(to_torch(x))]

    return disc_step, gen_step, logits


def check_parity(disc, params, torch_module, real, fake, jax_prog, torch_disc, torch_gen) -> dict:
    """Logits (real audio), both losses and the generator-side input gradient
    of both sides; raises if the logits differ by more than 1e-4."""
    ours, _ = jax.jit(disc.apply)({"params": params}, real)
    _, _, torch_logits = torch_programs(torch_module, real, fake)
    ref = torch_logits(real)
    diff = 0.0
    for a, b in zip(ours, ref):
        a = np.asarray(a)
        b = b.reshape(a.shape) if b.size == a.size else b
        if a.shape != b.shape:
            b = b.transpose(0, 2, 3, 1)                       # [b, 1, t, f] -> [b, t, f, 1]
        diff = max(diff, float(np.abs(a - b).max()))
    if diff > 1e-4:
        raise AssertionError(f"logits differ from torch's by {diff:.2e} (> 1e-4)")
    d_loss = float(jax_prog["disc_fn"]()[0])
    g_loss, g_audio = jax_prog["gen_fn"]()
    t_d_loss = torch_disc()
    t_g_loss, t_grad = torch_gen()
    t_grad = t_grad.numpy().transpose(0, 2, 1)
    grad_rel = float(np.abs(np.asarray(g_audio) - t_grad).max() / (np.abs(t_grad).max() + 1e-30))
    return dict(logit_diff=diff, d_loss=(d_loss, t_d_loss), g_loss=(float(g_loss), t_g_loss),
                grad_rel=grad_rel)


# ----------------------------------------------------------------------------- profile


def conv_calls(disc: nn.Module, audio: jax.Array) -> list[tuple]:
    """Every `_WeightNormConv2d` call of one forward pass: (path, input shape, module)."""
    calls = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, dm._WeightNormConv2d) and context.method_name == "__call__":
            calls.append(("/".join(module.scope.path), args[0].shape, module))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(disc.init, jax.random.key(0, impl="rbg"), audio)
    return calls


def layer_times(conv: Callable, x: jax.Array, k: jax.Array, repeats: int) -> list[float]:
    """Min times of conv's forward, input gradient and kernel gradient (seconds)."""
    y = jax.eval_shape(conv, x, k)
    dy = jnp.ones(y.shape, y.dtype)
    fns = [jax.jit(conv),
           jax.jit(lambda x, k: jax.vjp(lambda a: conv(a, k), x)[1](dy)),
           jax.jit(lambda x, k: jax.vjp(lambda b: conv(x, b), k)[1](dy))]
    times = []
    for f in fns:
        run = functools.partial(call_blocking, f, x, k)
        run()                                                # compile
        times.append(min(timed(run) for _ in range(repeats)))
    return times


def call_blocking(f: Callable, *args):
    return jax.block_until_ready(f(*args))


def profile_layers(disc: nn.Module, audio: jax.Array, repeats: int) -> None:
    """Forward, input- and kernel-gradient time of every conv (one input batch)."""
    print("\n  per conv layer (ms, one batch; conv2d vs the textbook lax.conv_general_dilated):")
    print(f"  {'layer':34s} {'input':>22s} {'k':>6s} {'s':>6s} {'d':>6s} | "
          f"{'fwd':>6s} {'dx':>6s} {'dw':>6s} | {'fwd':>6s} {'dx':>6s} {'dw':>6s}   (textbook)")
    rng = np.random.default_rng(0)
    totals = np.zeros(6)
    seen = {}
    for path, shape, m in conv_calls(disc, audio):
        pads = m.padding or tuple((k - 1) * d // 2 for k, d in zip(m.kernel_size, m.dilation))
        padding = ((pads[0], pads[0]), (pads[1], pads[1]))
        sig = (shape, m.features, m.kernel_size, m.strides, m.dilation, padding)
        if sig not in seen:
            x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
            k = jnp.asarray(rng.standard_normal((*m.kernel_size, shape[-1], m.features)) * 0.1,
                            jnp.float32)
            fast = functools.partial(conv_lib.conv2d, strides=m.strides, padding=padding,
                                     dilation=m.dilation)
            textbook = functools.partial(conv_lib._conv2d_xla, strides=m.strides,
                                         padding=padding, dilation=m.dilation, precision=None)
            row = layer_times(fast, x, k, repeats) + layer_times(textbook, x, k, repeats)
            seen[sig] = np.array(row) * 1e3
        row = seen[sig]
        totals += row
        print(f"  {path[-34:]:34s} {str(tuple(shape)):>22s} {'x'.join(map(str, m.kernel_size)):>6s} "
              f"{'x'.join(map(str, m.strides)):>6s} {'x'.join(map(str, m.dilation)):>6s} | "
              + " ".join(f"{t:6.1f}" for t in row[:3]) + " | "
              + " ".join(f"{t:6.1f}" for t in row[3:]))
    print(f"  {'total':34s} {'':>22s} {'':>6s} {'':>6s} {'':>6s} | "
          + " ".join(f"{t:6.1f}" for t in totals[:3]) + " | "
          + " ".join(f"{t:6.1f}" for t in totals[3:]))


def profile_parts(parts, real, fake, repeats: int) -> None:
    print("\n  per sub-discriminator (ms):")
    print(f"  {'part':14s} {'disc jax':>9s} {'torch':>9s} {'gen jax':>9s} {'torch':>9s}")
    for label, sub, sub_params, make_torch in parts:
        prog = jax_programs(sub, sub_params, real, fake)
        t_disc, t_gen, _ = torch_programs(make_torch(), np.asarray(real), np.asarray(fake))
        prog["disc"][0](), prog["gen"][0](), t_disc(), t_gen()
        t = interleaved({"jd": prog["disc"][0], "td": t_disc, "jg": prog["gen"][0],
                         "tg": t_gen}, repeats)
        print(f"  {label:14s} {1e3 * t['jd']:9.1f} {1e3 * t['td']:9.1f} {1e3 * t['jg']:9.1f} "
              f"{1e3 * t['tg']:9.1f}")


# ----------------------------------------------------------------------------- main


def textbook_conv(x, kernel, strides, padding, dilation):
    """The convolution before `conv2d`: plain `lax.conv_general_dilated`."""
    return conv_lib._conv2d_xla(x, kernel, strides, padding, dilation, None)


def textbook_programs(disc, params, real, fake):
    """`jax_programs` traced with `textbook_conv` in the discriminators."""
    fast, dm.conv2d = dm.conv2d, textbook_conv
    try:
        return jax_programs(disc, params, real, fake)
    finally:
        dm.conv2d = fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(NAMES),
                        help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--widths", choices=("vocos", "tiny"), default="vocos",
                        help="mpd/mrd sizes: vocos's own, or configs/vocoder/tiny.py's")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.5, help="per example")
    parser.add_argument("--sample-rate", type=int, default=24_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--profile", action="store_true",
                        help="per sub-discriminator and per conv layer timings")
    parser.add_argument("--textbook-conv", action="store_true",
                        help="also time JAX on plain lax.conv_general_dilated (interleaved)")
    parser.add_argument("--no-hugepages", action="store_true",
                        help="do not re-run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in NAMES:
            parser.error(f"unknown discriminator {n!r}; expected some of {','.join(NAMES)}")
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not args.no_hugepages and "glibc.malloc.hugetlb" not in tunables:
        env = dict(os.environ, GLIBC_TUNABLES=":".join(
            t for t in (tunables, "glibc.malloc.hugetlb=1") if t))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)  # malloc reads it at start

    import torch

    torch.set_num_threads(args.threads)
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}, {os.cpu_count()} CPUs), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
    samples = int(args.seconds * args.sample_rate)
    rng = np.random.default_rng(0)
    real = (0.1 * rng.standard_normal((args.batch, samples, 1))).astype(np.float32)
    fake = (0.1 * rng.standard_normal((args.batch, samples, 1))).astype(np.float32)
    real_j, fake_j = jnp.asarray(real), jnp.asarray(fake)
    print(f"batch {args.batch} x {args.seconds:g} s at {args.sample_rate} Hz; {args.widths} "
          f"widths {vocoder_widths(args.widths)}; min of {args.repeats} interleaved repeats\n")
    textbook = " | textbook JAX ms | textbook / JAX" if args.textbook_conv else ""
    header = ("| discriminator | step | JAX ms | torch ms | torch / JAX | XLA GFLOP "
              f"| JAX GFLOP/s | torch GFLOP/s{textbook} |")
    rows = []
    for name in names:
        disc, params, torch_module, parts = build(name, real_j, jax.random.key(0, impl="rbg"),
                                                  args.widths)
        prog = jax_programs(disc, params, real_j, fake_j)
        old = textbook_programs(disc, params, real_j, fake_j) if args.textbook_conv else None
        t_disc, t_gen, _ = torch_programs(torch_module, real, fake)
        parity = check_parity(disc, params, torch_module, real_j, fake_j, prog, t_disc, t_gen)
        n_params = sum(a.size for a in jax.tree.leaves(params))
        print(f"{name}: {n_params / 1e6:.2f} M params; max |logit diff| "
              f"{parity['logit_diff']:.1e}; disc loss jax {parity['d_loss'][0]:.6f} / torch "
              f"{parity['d_loss'][1]:.6f}; gen loss {parity['g_loss'][0]:.6f} / "
              f"{parity['g_loss'][1]:.6f}; d loss/d audio max rel diff {parity['grad_rel']:.1e}",
              flush=True)
        for kind, torch_fn in (("disc", t_disc), ("gen", t_gen)):
            jax_fn, flops = prog[kind]
            fns = {"jax": jax_fn, "torch": torch_fn}
            if old is not None:
                old[kind][0]()                                   # warm up
                fns["textbook"] = old[kind][0]
            t = interleaved(fns, args.repeats)
            row = (f"| {name} | {kind} | {1e3 * t['jax']:.1f} | {1e3 * t['torch']:.1f} | "
                   f"{t['torch'] / t['jax']:.2f} | {flops / 1e9:.2f} | {flops / t['jax'] / 1e9:.1f} "
                   f"| {flops / t['torch'] / 1e9:.1f} |")
            if old is not None:
                row += f" {1e3 * t['textbook']:.1f} | {t['textbook'] / t['jax']:.2f} |"
            rows.append(row)
            print(f"  {row}", flush=True)
        if args.profile:
            profile_parts(parts, real_j, fake_j, args.repeats)
            profile_layers(disc, real_j, args.repeats)
            print()
        # One discriminator's programs and torch modules at a time (MPD's are GBs).
        del disc, params, torch_module, parts, prog, old, t_disc, t_gen
        gc.collect()
        jax.clear_caches()

    print("\n" + header)
    print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.textbook_conv else ""))
    print("\n".join(rows))
    print("\n(torch / JAX > 1: JAX is faster. disc: forward real + fake, hinge loss, grad "
          "w.r.t. params; gen: forward fake, hinge loss, grad w.r.t. the audio.)")

if __name__ == "__main__":
    main()
