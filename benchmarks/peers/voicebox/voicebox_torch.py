r"""The torch side of `benchmarks/voicebox_speed.py`: voicebox-pytorch 0.5.0, timed.

Runs in this folder's own venv (`install.sh`), never in the project's:

    benchmarks/peers/voicebox/.venv/bin/python benchmarks/peers/voicebox/voicebox_torch.py \
        --spec SPEC.json --out RESULT.json
    benchmarks/peers/voicebox/.venv/bin/python benchmarks/peers/voicebox/voicebox_torch.py --check

`voicebox_speed.py` writes SPEC.json (the shape, the optimizer, what to time, the
path of an .npz of the inputs both sides use) and reads RESULT.json back:
seconds (min of `repeats` after a warm-up) and FLOPs (`FlopCounterMode`: matmuls,
convolutions and attention only, counted through the einsum attention) of one train
step and of each sampling run.

The package's `voicebox_pytorch/__init__.py` imports its trainer, audiolm-pytorch
(fairseq), spear-tts, Vocos and more; none of it runs here. `import_voicebox`
registers `voicebox_pytorch` as a bare package and imports only
`voicebox_pytorch.voicebox_pytorch`, with stub modules (each with a `__spec__`) in
place of the optional features that module imports at its top: the aligner and
phone tokenizer of the duration predictor (naturalspeech2-pytorch), EnCodec
(audiolm-pytorch), Spear-TTS, GateLoop layers, torchaudio's mel transforms and
Vocos. A stub class raises if anything builds it.

The model, built in `build` from the spec:

* `VoiceBox(num_cond_tokens=num_phones, dim_in=100, dim_cond_emb=phone_embed_dim,
  dim, depth, heads, dim_head=dim / heads, ff_mult=1.5 * mlp_ratio,
  conv_pos_embed_kernel_size, conv_pos_embed_groups, attn_qk_norm=False,
  num_register_tokens=0, attn_flash=...)`: `ff_mult` 6 makes its GEGLU's inner
  width `int(dim * 6 * 2 / 3) = 4 dim`, as our SwiGLU's (same matmul FLOPs).
* its `transformer` rebuilt with the package's own `Transformer` and
  `use_unet_skip_connection=True`: `VoiceBox.__init__` never passes that flag, so
  0.5.0's Voicebox has no U-Net skips unless one does this (ours has them).
* `ConditionalFlowMatcherWrapper(voicebox, sigma=sigma_min, cond_drop_prob=p_uncond,
  torchdiffeq_ode_method=method)`.

Train step: `wrapper(x1, mask=valid, phoneme_ids=phones, cond=x1, cond_mask=mask)`
(the masked flow-matching loss), backward, `clip_grad_norm_`, `torch.optim.AdamW`.
Sampling: `wrapper.sample(cond=x1, semantic_token_ids=phones, cond_mask=mask,
steps=steps + 1, cond_scale=1 + guidance)`. The frame-aligned phones go in as
`semantic_token_ids`: with `phoneme_ids` and no duration predictor 0.5.0's `sample`
leaves its condition ids unset and fails; as semantic ids the same frame-aligned
ids reach the same embedding. `steps + 1` because `sample` integrates over
`linspace(0, 1, steps)`, i.e. `steps - 1` intervals of torchdiffeq's fixed grid.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import sys
import time
import types

STUBS = {
    "naturalspeech2_pytorch": [],
    "naturalspeech2_pytorch.aligner": ["Aligner", "ForwardSumLoss", "BinLoss", "maximum_path"],
    "naturalspeech2_pytorch.utils": [],
    "naturalspeech2_pytorch.utils.tokenizer": ["Tokenizer"],
    "naturalspeech2_pytorch.naturalspeech2_pytorch": ["generate_mask_from_repeats"],
    "audiolm_pytorch": ["EncodecWrapper", "HubertWithKmeans"],
    "spear_tts_pytorch": ["TextToSemantic"],
    "gateloop_transformer": ["SimpleGateLoopLayer"],
    "torchaudio": [],
    "torchaudio.transforms": [],
    "torchaudio.functional": ["DB_to_amplitude", "resample"],
    "vocos": ["Vocos"],
}


def _stub(module: str, name: str) -> type:
    def refuse(*args, **kwargs):
        raise RuntimeError(f"{module}.{name} is a stub (benchmarks/peers/voicebox/"
                           "voicebox_torch.py): the benchmark never uses it")

    return type(name, (), {"__init__": refuse, "__call__": refuse})


def import_voicebox():
    """`voicebox_pytorch.voicebox_pytorch` without the package's `__init__` and with the
    optional features' imports stubbed (see the module docstring)."""
    spec = importlib.util.find_spec("voicebox_pytorch")
    if spec is None:
        raise SystemExit("voicebox-pytorch is missing: bash benchmarks/peers/voicebox/install.sh")
    for name, attributes in STUBS.items():
        if name in sys.modules:
            continue
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        stub.__path__ = []
        for attribute in attributes:
            setattr(stub, attribute, _stub(name, attribute))
        sys.modules[name] = stub
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, stub)
    if "voicebox_pytorch" not in sys.modules:
        package = types.ModuleType("voicebox_pytorch")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["voicebox_pytorch"] = package
    import warnings

    with warnings.catch_warnings():          # torch.cuda.amp.autocast's deprecation
        warnings.simplefilter("ignore", FutureWarning)
        import voicebox_pytorch.voicebox_pytorch as vb
    return vb


def build(spec: dict):
    """(VoiceBox with U-Net skips, ConditionalFlowMatcherWrapper) of the spec's shape."""
    import torch

    vb = import_voicebox()
    torch.manual_seed(0)
    dim, depth, heads = spec["dim"], spec["depth"], spec["heads"]
    ff_mult = 1.5 * spec["mlp_ratio"]
    common = dict(dim=dim, depth=depth, dim_head=dim // heads, heads=heads, ff_mult=ff_mult,
                  attn_flash=spec["flash"], attn_qk_norm=False, num_register_tokens=0)
    model = vb.VoiceBox(num_cond_tokens=spec["num_phones"], dim_in=spec["feature_dim"],
                        dim_cond_emb=spec["phone_embed_dim"],
                        conv_pos_embed_kernel_size=spec["conv_kernel"],
                        conv_pos_embed_groups=spec["conv_groups"], **common)
    model.transformer = vb.Transformer(adaptive_rmsnorm=True,
                                       adaptive_rmsnorm_cond_dim_in=4 * dim,
                                       use_unet_skip_connection=True, **common)
    wrapper = vb.ConditionalFlowMatcherWrapper(model, sigma=spec["sigma_min"],
                                               cond_drop_prob=spec["p_uncond"])
    return model.to(spec["device"]), wrapper.to(spec["device"])


def best_of(fn, repeats: int) -> float:
    fn()                                                 # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def count_flops(fn, model) -> float | None:
    """`FlopCounterMode`'s total over one `fn()`, with two of its gaps closed:

    * it has no formula for the CPU flash kernel of `scaled_dot_product_attention`
      (it would count no attention at all), so the count runs the package's einsum
      attention, the same products;
    * its `convolution_backward` formula ignores `groups`: for the position
      embedding's 16-group conv it counted 17x the forward, so the backward is taken
      as 2x the forward (the input's and the kernel's gradients; the input always
      needs one here).
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    attends = [m for m in model.modules() if type(m).__name__ == "Attend"]
    flash = [a.flash for a in attends]
    for a in attends:
        a.flash = False
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        for a, f in zip(attends, flash):
            a.flash = f
    counts = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    total = float(counter.get_total_flops())
    if "aten.convolution_backward" in counts:
        total += 2 * counts.get("aten.convolution", 0) - counts["aten.convolution_backward"]
    return total


def run(spec: dict) -> dict:
    import warnings

    import numpy as np
    import torch

    # attend.py's `torch.backends.cuda.sdp_kernel` context, deprecated, on every call
    warnings.filterwarnings("ignore", message=".*sdp_kernel.*", category=FutureWarning)

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    model, wrapper = build(spec)
    inputs = np.load(spec["inputs"])
    x1 = torch.from_numpy(inputs["x1"]).to(device)
    phones = torch.from_numpy(inputs["phones"].astype(np.int64)).to(device)
    valid = torch.from_numpy(inputs["valid"]).to(device)
    mask = torch.from_numpy(inputs["mask"]).to(device)
    autocast = lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                      enabled=spec["dtype"] == "bfloat16")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
           "params": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    if "train" in spec["only"]:
        o = spec["optimizer"]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=o["lr"], betas=(o["b1"], o["b2"]), eps=o["eps"],
                                      weight_decay=o["weight_decay"])

        def forward_backward():
            with autocast():
                loss = wrapper(x1, mask=valid, phoneme_ids=phones, cond=x1, cond_mask=mask)
            loss.backward()
            return loss

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = forward_backward()
            if o["clip"] > 0:
                torch.nn.utils.clip_grad_norm_(params, o["clip"])
            optimizer.step()
            sync()
            return loss

        out["train"] = {"seconds": best_of(step, spec["repeats"]),
                        "flops": count_flops(forward_backward, model) if spec["flops"] else None}
        optimizer.zero_grad(set_to_none=True)

    if "sample" in spec["only"]:
        model.eval()
        cond_scale = 1.0 + spec["guidance"]
        times = torch.tensor(0.5, device=device)

        def velocity():                     # one guided evaluation: two passes of batch B
            with torch.inference_mode(), autocast():
                return model.forward_with_cond_scale(x1, times=times, cond_token_ids=phones,
                                                     cond=x1, cond_mask=mask,
                                                     self_attn_mask=valid,
                                                     cond_scale=cond_scale)

        per_eval = count_flops(velocity, model) if spec["flops"] else None
        out["sample"] = []
        for run_ in spec["sample_runs"]:
            wrapper.odeint_kwargs["method"] = run_["method"]

            def sample(steps=run_["steps"]):
                with torch.inference_mode(), autocast():
                    mel = wrapper.sample(cond=x1, semantic_token_ids=phones, cond_mask=mask,
                                         steps=steps + 1, cond_scale=cond_scale,
                                         decode_to_audio=False)
                sync()
                return mel

            evals = run_["evals"]
            out["sample"].append({**run_, "seconds": best_of(sample, spec["repeats"]),
                                  "flops": None if per_eval is None else per_eval * evals})
    return out


def check() -> None:
    """A micro model's train step and one guided Euler step, run once each."""
    import numpy as np

    rng = np.random.default_rng(0)
    b, t = 2, 16
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inputs.npz")
        np.savez(path, x1=rng.standard_normal((b, t, 100)).astype(np.float32),
                 phones=rng.integers(1, 10, (b, t)).astype(np.int32),
                 valid=np.ones((b, t), bool), mask=np.arange(t)[None].repeat(b, 0) >= 4)
        spec = dict(dim=32, depth=2, heads=2, mlp_ratio=4, num_phones=10, feature_dim=100,
                    phone_embed_dim=8, conv_kernel=3, conv_groups=4, sigma_min=1e-5,
                    p_uncond=0.2, flash=True, device="cpu", dtype="float32", threads=1,
                    repeats=1, flops=True, guidance=0.7, only=["train", "sample"],
                    optimizer=dict(lr=1e-4, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01,
                                   clip=0.2),
                    sample_runs=[dict(method="euler", steps=1, evals=1, passes=2)],
                    inputs=path)
        result = run(spec)
    print(f"voicebox-pytorch works: torch {result['torch']}, micro train step "
          f"{result['train']['seconds'] * 1e3:.1f} ms, sample "
          f"{result['sample'][0]['seconds'] * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="the JSON spec voicebox_speed.py writes")
    parser.add_argument("--out", help="where the JSON result goes")
    parser.add_argument("--check", action="store_true", help="a micro run, nothing written")
    args = parser.parse_args()
    if args.check:
        check()
        return
    if not (args.spec and args.out):
        parser.error("--spec and --out (or --check)")
    with open(args.spec) as f:
        spec = json.load(f)
    result = run(spec)
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
