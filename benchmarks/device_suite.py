r"""Every family's train step on one accelerator: step time, throughput, FLOPs and MFU.

    python benchmarks/device_suite.py                       # base configs on a GPU/TPU
    python benchmarks/device_suite.py --peak-tflops 989 --json suite.json
    python benchmarks/device_suite.py --families codec,mulan --steps 10 --batch 8
    python benchmarks/device_suite.py --size tiny --steps 3 # on a CPU (the default there)

What it measures. For each family (`codec`, `w2v_bert`, `ctc`, `mulan`, `melody`,
`mel_transformer`, `vocoder`, `voicebox`, `f5tts`, `musicgen`) the suite builds the model, optimizer and train state from
`configs/<family>/<size>.py` the way `train/<family>.py` does, feeds it a
synthetic batch of the shapes and dtypes the trainer's pipeline yields (no data
pipeline, corpora, torch or transformers: a plain JAX install with this library
runs it), and

- places the state as the loop does (the shardings `abstract_state` reads off
  the config's rule table, on a data-parallel mesh over `--devices` local
  devices) and compiles the step as the loop jits it
  (`jit_train_step(...).lower(...).compile()`, timed: tracing, lowering and XLA
  compilation together);
- reads the FLOPs of one step from XLA's cost analysis of the compiled program;
- runs two warm-up steps, then times `--steps` steps (`jax.block_until_ready`
  on the new state and metrics) and reports the median.

MFU here is achieved / peak, where "achieved" is XLA's FLOP count of the whole
compiled step (forward, backward, optimizer update and the audio front end,
elementwise work included) divided by the median step time: not a hand count
of matmul FLOPs, so it reads a little higher than the PaLM-style 6ND MFU. The
cost analysis of a partitioned program counts one device's share, so the
per-device FLOPs are compared with `--peak-tflops` (one device's peak; default
989 TFLOP/s, an H100/H200's dense bf16) and the FLOPs column is that times the
device count. On a CPU the suite picks the `tiny` configs and prints MFU as n/a
unless `--peak-tflops` is given.

Compute dtype: `--dtype` (default bfloat16) sets the configs' compute-dtype
fields, `compute_dtype` (codec) and `model.dtype` (mel_transformer); params stay
float32. w2v_bert, ctc, mulan and melody configs have no such field (their
trainers compute in float32), so they run in float32 and the `dtype` column says so.

Per family: codec times the phase of the run that covers most of its steps
(adversarial for base, reconstruction only for tiny, whose adversarial phase
starts where its run ends); ctc has one recipe (`configs/ctc/tiny.py`) and runs
it over the `configs/w2v_bert/<size>.py` encoder, from random rather than
pretrained weights (the cost is the same), on 3 s utterances with 40 phone
labels. vocoder times its adversarial phase (Vocos + multi-period and
multi-resolution discriminators); voicebox times the audio model's
flow-matching step with the log-mel computed inside it (the duration model is
a few percent of its cost); f5tts times the CFM step of F5TTS_v1_Base (fine-tuning
the imported weights costs the same as training it) on full-length examples of
`data.max_frames` frames with 256-character texts; musicgen times fine-tuning
musicgen-small (T5-base frozen, the 24 x 1024 decoder trained) on 10 s of codes
with 32-token captions. `hubert` and `bert` have no trainers and are
skipped (BERT's cost is part of MuLan's step as its text tower).

A family that fails prints its error in its row, the suite goes on and exits 1.
`--fast-compile` turns off XLA's backend optimization: the tests' CPU smoke run
uses it to check that every step still compiles and runs, not to time it.
On one H200 the base suite (eight compiles and steps) is meant to finish within
4 minutes; keep `--steps` small.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training.loop import jit_train_step
from audiolm_jax.training.optimizers import make_optimizer

FAMILIES = ("codec", "w2v_bert", "ctc", "mulan", "melody", "mel_transformer", "vocoder",
            "voicebox", "f5tts", "musicgen")
DEFAULT_PEAK_TFLOPS = 989.0     # H100 / H200 SXM, dense bfloat16
WARMUP_STEPS = 2
# `--fast-compile`: no LLVM optimization of the generated code. On a 2-core CPU it
# cut the codec's init compile from 46 to 10 s; the steps run slower, so it is
# for smoke runs (the tests), never for the numbers.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
# CTC's synthetic utterances: espeak's stress-free inventory is about this size,
# and speech runs at about 13 phones per second.
CTC_PHONES, CTC_SECONDS, CTC_LABELS = 48, 3.0, 40


@dataclasses.dataclass
class FamilyStep:
    """One family's train step, ready to place, compile and time.

    Attributes:
      name: the family (`FAMILIES`).
      size: the config size it was built from.
      config: that trainer config (`ml_collections.ConfigDict`).
      init_fn: PRNG key -> train state (params boxed with their logical axes).
      train_step: the trainer's pure step, `(state, batch, rng) -> (state, metrics)`.
      batch: the global batch, numpy arrays with a leading batch axis.
      examples: examples per step (pairs for melody).
      unit: the natural throughput unit, e.g. "audio s".
      units: how many of `unit` one step processes.
      rules: the config's logical-axis rule table.
      dtype: the compute dtype the step runs in.
      note: what is timed, where a family has a choice (e.g. the codec's phase).
    """

    name: str
    size: str
    config: Any
    init_fn: Callable[[jax.Array], Any]
    train_step: Callable[[Any, Any, jax.Array], tuple[Any, dict]]
    batch: dict[str, np.ndarray]
    examples: int
    unit: str
    units: float
    rules: list
    dtype: str
    note: str = ""


# ----------------------------------------------------------------------------- builders


def _config(family: str, size: str, batch: int | None) -> Any:
    """`configs/<family>/<size>.py`'s config, with `data.batch_size` overridden."""
    config = importlib.import_module(f"configs.{family}.{size}").get_config()
    if batch is not None:
        config.data.batch_size = batch
    return config


def _audio(batch: int, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise at speech level: `[batch, samples, 1]` float32 and an all-valid `[batch, samples]`
    bool mask, as the audio pipelines yield them."""
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((batch, samples, 1))).astype(np.float32)
    return audio, np.ones((batch, samples), bool)


def _codec_adversarial(config: Any) -> bool:
    """Whether the adversarial phase covers most of the run's steps (the phase the run
    mostly spends its time in; `make_train_phases` draws the same boundary)."""
    start, total = int(config.loss.adversarial_start_step), int(config.train.num_steps)
    weighted = any(float(config.loss.weights.get(k, 0.0)) for k in ("adv", "feat"))
    return weighted and start < total and total - start >= start


def build_codec(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """EnCodec GAN step; batch `audio [B, crop, channels]`."""
    from audiolm_jax.models.codec import train as codec_train

    c = _config("codec", size, batch)
    c.compute_dtype = dtype
    codec, disc = codec_train.build_codec(c), codec_train.build_discriminator(c)
    adversarial = _codec_adversarial(c)
    audio, _ = _audio(c.data.batch_size, int(c.data.crop_seconds * c.model.sample_rate))
    audio = np.repeat(audio, c.model.seanet.audio_channels, axis=-1)
    b = c.data.batch_size
    return FamilyStep(
        "codec", size, c, codec_train.make_init_fn(codec, disc, c),
        codec_train.make_train_step(codec, disc, c, adversarial=adversarial), {"audio": audio},
        b, "audio s", b * c.data.crop_seconds, mesh_lib.get_rules(c.mesh.rules), dtype,
        "adversarial phase" if adversarial else "reconstruction phase")


def build_w2v_bert(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """Semantic-encoder pretraining step; batch `audio [B, S, 1]`, `mask [B, S]`."""
    del dtype  # the encoder computes in float32
    from audiolm_jax.models.w2v_bert import pretrain

    c = _config("w2v_bert", size, batch)
    model = pretrain.build_model(c)
    if model.config.objective == "kmeans":   # its centroids are fitted on data first
        raise ValueError("the suite times the w2v_bert and best_rq objectives, not kmeans")
    audio, mask = _audio(c.data.batch_size, int(c.data.crop_seconds * c.model.encoder.sample_rate))
    b = c.data.batch_size
    return FamilyStep(
        "w2v_bert", size, c, pretrain.make_init_fn(model, make_optimizer(c.optimizer)),
        pretrain.make_train_step(model), {"audio": audio, "mask": mask}, b, "audio s",
        b * c.data.crop_seconds, mesh_lib.get_rules(c.mesh.rules), "float32",
        f"{model.config.objective} objective")


def build_ctc(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """CTC fine-tuning step; batch `audio [B, S]`, `lengths [B]`, `labels [B, L]`,
    `label_valid [B, L]`."""
    del dtype  # the recognizer computes in float32
    from audiolm_jax.models import ctc
    from audiolm_jax.models.w2v_bert import W2vBertConfig

    c = _config("ctc", "tiny", batch)        # one recipe, over the encoder of `size`
    encoder = W2vBertConfig(**_config("w2v_bert", size, None).model.encoder.to_dict())
    model = ctc.CTCRecognizer(encoder, CTC_PHONES, c.model.layer)
    # The trainer starts from a pretrained encoder; random weights cost the same, and
    # drawing them in numpy from the shapes spares a second compile of the init.
    dim = encoder.feature_projection_input_dim
    shapes = jax.eval_shape(lambda key: nn.unbox(model.init(
        key, jnp.zeros((1, 8, dim)), jnp.ones((1, 8), bool))), jax.random.key(0))
    draw = np.random.default_rng(0)
    pretrained = jax.tree.map(lambda s: (0.02 * draw.standard_normal(s.shape)).astype(s.dtype),
                              shapes["params"]["encoder"])
    b = c.data.batch_size
    audio, _ = _audio(b, int(CTC_SECONDS * encoder.sample_rate))
    labels = np.random.default_rng(0).integers(1, CTC_PHONES + 1, (b, CTC_LABELS))
    batch_arrays = {"audio": audio[..., 0], "lengths": np.full((b,), audio.shape[1], np.int32),
                    "labels": labels.astype(np.int32),
                    "label_valid": np.ones((b, CTC_LABELS), bool)}
    return FamilyStep(
        "ctc", size, c, ctc.make_init_fn(model, make_optimizer(c.optimizer), pretrained),
        ctc.make_train_step(model, c.model.freeze_encoder_steps), batch_arrays, b, "audio s",
        b * CTC_SECONDS, mesh_lib.get_rules(c.mesh.rules), "float32",
        f"w2v_bert/{size} encoder")


def build_mulan(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """MuLan contrastive step; batch `audio [B, S, 1]`, `mask [B, S]`, `text_ids [B, L]`
    int32, `text_mask [B, L]` int32 (the pipeline's kept fields are int32)."""
    del dtype  # the trainer builds MuLan without a compute dtype: float32
    from audiolm_jax.models import mulan

    c = _config("mulan", size, batch)
    model = mulan.MuLan(mulan.build_config(c.model), remat=c.model.remat,
                        freeze_text=c.model.freeze_text)
    cfg, b = model.config, c.data.batch_size
    audio, mask = _audio(b, cfg.audio.clip_samples)
    ids = np.random.default_rng(0).integers(1, cfg.text.vocab_size, (b, cfg.max_text_length))
    batch_arrays = {"audio": audio, "mask": mask, "text_ids": ids.astype(np.int32),
                    "text_mask": np.ones((b, cfg.max_text_length), np.int32)}
    return FamilyStep(
        "mulan", size, c,
        mulan.make_init_fn(model, make_optimizer(c.optimizer), c.model.freeze_text),
        mulan.make_train_step(model), batch_arrays, b, "audio s", b * cfg.audio.clip_seconds,
        mesh_lib.get_rules(c.mesh.rules), "float32",
        f"text tower from scratch, {cfg.max_text_length} tokens")


def build_melody(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """Melody-embedder step on pairs; batch `audio_a`, `audio_b [B, S, 1]`,
    `mask_a`, `mask_b [B, S]` (B pairs, two clips each)."""
    del dtype  # the trainer builds the embedder without a compute dtype: float32
    from audiolm_jax.models import melody

    c = _config("melody", size, batch)
    model = melody.MelodyEmbedder(melody.MelodyConfig(**c.model.to_dict()))
    b, samples = c.data.batch_size, model.config.clip_samples
    audio_a, mask = _audio(b, samples, seed=0)
    audio_b, _ = _audio(b, samples, seed=1)
    return FamilyStep(
        "melody", size, c, melody.make_init_fn(model, make_optimizer(c.optimizer)),
        melody.make_train_step(model),
        {"audio_a": audio_a, "mask_a": mask, "audio_b": audio_b, "mask_b": mask}, b, "audio s",
        2 * b * model.config.clip_seconds, mesh_lib.get_rules(c.mesh.rules), "float32",
        "batch counts pairs")


def build_mel_transformer(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """Masked log-mel step; batch `audio [B, S, 1]`, `mask [B, S]`."""
    from audiolm_jax.models import mel_transformer

    c = _config("mel_transformer", size, batch)
    c.model.dtype = dtype
    model = mel_transformer.build_model(c)
    audio, mask = _audio(c.data.batch_size, int(c.data.crop_seconds * c.model.sample_rate))
    b = c.data.batch_size
    return FamilyStep(
        "mel_transformer", size, c, mel_transformer.make_init_fn(model, make_optimizer(c.optimizer)),
        mel_transformer.make_train_step(model, c), {"audio": audio, "mask": mask}, b, "audio s",
        b * c.data.crop_seconds, mesh_lib.get_rules(c.mesh.rules), dtype)


def build_vocoder(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """Vocos GAN step (adversarial phase: multi-period + multi-resolution discriminators);
    batch `audio [B, crop, 1]`."""
    from audiolm_jax.models.vocoder import train as vocoder_train

    c = _config("vocoder", size, batch)
    c.compute_dtype = dtype
    vocos, discs = vocoder_train.build_vocos(c), vocoder_train.build_discriminators(c)
    samples = vocoder_train.crop_samples(c)
    audio, _ = _audio(c.data.batch_size, samples)
    b = c.data.batch_size
    return FamilyStep(
        "vocoder", size, c, vocoder_train.make_init_fn(vocos, discs, c),
        vocoder_train.make_train_step(vocos, discs, c, adversarial=True), {"audio": audio}, b,
        "audio s", b * samples / c.model.sample_rate, mesh_lib.get_rules(c.mesh.rules), dtype,
        "adversarial phase")


def build_voicebox(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """Voicebox audio-model flow-matching step (log-mel computed in the step); batch
    `audio [B, (F - 1) * hop]`, `frame_phones [B, F]`, `frame_valid [B, F]`."""
    from audiolm_jax.models.voicebox import train as voicebox_train

    c = _config("voicebox", size, batch)
    c.compute_dtype = dtype
    c.model.num_phones = CTC_PHONES * 3       # espeak's stressed inventory over 8 accents
    model = voicebox_train.build_model(c)
    b, frames, hop = c.data.batch_size, c.data.max_frames, c.mel.hop_length
    audio, _ = _audio(b, (frames - 1) * hop)
    phones = np.random.default_rng(0).integers(1, c.model.num_phones, (b, frames))
    batch_arrays = {"audio": audio[..., 0], "frame_phones": phones.astype(np.int32),
                    "frame_valid": np.ones((b, frames), bool)}
    return FamilyStep(
        "voicebox", size, c, voicebox_train.make_init_fn(model, c),
        voicebox_train.make_train_step(model, c), batch_arrays, b, "audio s",
        b * (frames - 1) * hop / c.mel.sample_rate, mesh_lib.get_rules(c.mesh.rules), dtype,
        f"audio model, {frames} frames")


def build_f5tts(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """F5-TTS CFM step (span infilling; log-mel computed in the step); batch `audio
    [B, (F - 1) * hop]`, `text [B, max_chars]` int32 ids, `frames [B]` int32."""
    from audiolm_jax.models.f5tts import train as f5_train

    c = _config("f5tts", size, batch)
    c.compute_dtype = dtype
    model = f5_train.build_model(c)
    b, frames, hop = c.data.batch_size, c.data.max_frames, c.model.hop_length
    audio, _ = _audio(b, (frames - 1) * hop)
    text = np.random.default_rng(0).integers(0, c.model.text_num_embeds, (b, c.data.max_chars))
    batch_arrays = {"audio": audio[..., 0], "text": text.astype(np.int32),
                    "frames": np.full((b,), frames, np.int32)}
    return FamilyStep(
        "f5tts", size, c, f5_train.make_init_fn(model, c), f5_train.make_train_step(model, c),
        batch_arrays, b, "audio s", b * (frames - 1) * hop / c.model.sample_rate,
        mesh_lib.get_rules(c.mesh.rules), dtype, f"CFM step, {frames} frames")


def build_musicgen(size: str, batch: int | None, dtype: str) -> FamilyStep:
    """MusicGen fine-tuning step (T5 frozen, per-book cross-entropy); batch `codes [B, T,
    4]` int32, `frames [B]`, `text_ids [B, C]`, `text_mask [B, C]`."""
    from audiolm_jax.models.musicgen import train as mg_train

    c = _config("musicgen", size, batch)
    c.compute_dtype = dtype
    model = mg_train.build_model(c)
    m, b, frames, tokens = model.config, c.data.batch_size, c.data.frames, c.data.text_tokens
    rng = np.random.default_rng(0)
    batch_arrays = {
        "codes": rng.integers(0, m.codebook_size, (b, frames, m.num_codebooks)).astype(np.int32),
        "frames": np.full((b,), frames, np.int32),
        "text_ids": rng.integers(2, m.text.vocab_size, (b, tokens)).astype(np.int32),
        "text_mask": np.ones((b, tokens), bool)}
    return FamilyStep(
        "musicgen", size, c, mg_train.make_init_fn(model, c), mg_train.make_train_step(model, c),
        batch_arrays, b, "audio s", b * frames / m.frame_rate, mesh_lib.get_rules(c.mesh.rules),
        dtype, f"fine-tuning step, {frames} frames, T5 frozen")


BUILDERS: dict[str, Callable[[str, int | None, str], FamilyStep]] = {
    "codec": build_codec, "w2v_bert": build_w2v_bert, "ctc": build_ctc, "mulan": build_mulan,
    "melody": build_melody, "mel_transformer": build_mel_transformer,
    "vocoder": build_vocoder, "voicebox": build_voicebox, "f5tts": build_f5tts,
    "musicgen": build_musicgen,
}


def build_family(name: str, size: str = "tiny", batch: int | None = None,
                 dtype: str = "bfloat16") -> FamilyStep:
    """The train step of family `name` from its `size` config.

    Args:
      batch: global batch size instead of the config's `data.batch_size`.
      dtype: compute dtype, where the family's config has a compute-dtype field.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown family {name!r}; the suite has {list(BUILDERS)}")
    return BUILDERS[name](size, batch, dtype)


# ----------------------------------------------------------------------------- timing


def flops_of(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled program (one device's share when partitioned).

    `cost_analysis()` gives a dict, or in some JAX versions a list of dicts (one per
    HLO module); None when no entry counts FLOPs (some backends do not).
    """
    cost = compiled.cost_analysis()
    costs = cost if isinstance(cost, list | tuple) else [cost]
    counted = [float(c["flops"]) for c in costs if c and "flops" in c]
    return sum(counted) if counted else None


def _param_count(state: Any) -> int:
    """Trainable parameters of a `TrainState`, or of every `TrainState` in a dict of them
    (the codec's generator and discriminator), without the optimizer moments."""
    parts = state.values() if isinstance(state, dict) else [state]
    return sum(state_lib.count_params(p.params) for p in parts if hasattr(p, "params"))


def init_state(family: FamilyStep, mesh: jax.sharding.Mesh, rng: jax.Array,
               compiler_options: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """`state.create_sharded_state`: the state initialized in the shardings that the
    config's rules give its logical axes, here with `compiler_options` for the init."""
    _, shardings = state_lib.abstract_state(family.init_fn, mesh, family.rules, rng)
    with mesh_lib.sharding_context(mesh, family.rules):
        state = jax.jit(lambda key: nn.unbox(family.init_fn(key)), out_shardings=shardings,
                        compiler_options=compiler_options)(rng)
    return state, shardings


def time_family(family: FamilyStep, steps: int, devices: Sequence[jax.Device],
                compiler_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Places, compiles and times `family`'s step on a data-parallel mesh over `devices`.

    Args:
      compiler_options: XLA options for both compiles (`FAST_COMPILE` for smoke runs).

    Returns:
      a JSON-ready dict: step_seconds (median), compile_seconds, flops (whole step,
      all devices; None when XLA does not count), flops_per_device, params, loss of
      the last step, and the family's batch, unit and dtype.
    """
    if family.examples % len(devices):
        raise ValueError(f"batch {family.examples} does not split over {len(devices)} devices")
    mesh = mesh_lib.create_mesh((len(devices), 1, 1), devices)
    state, shardings = init_state(family, mesh, jax.random.key(0), compiler_options)
    batch = mesh_lib.make_global_batch(family.batch, mesh)
    rng = jax.random.key(1)
    with mesh_lib.sharding_context(mesh, family.rules):
        start = time.perf_counter()
        compiled = jit_train_step(family.train_step, shardings, mesh).lower(
            state, batch, rng).compile(compiler_options)
        compile_seconds = time.perf_counter() - start
    per_device = flops_of(compiled)
    times = []
    for i in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, rng)   # the state is donated: rebind it
        jax.block_until_ready((state, metrics))
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return {"family": family.name, "size": family.size, "batch": family.examples,
            "dtype": family.dtype, "note": family.note, "unit": family.unit,
            "units_per_step": family.units, "devices": len(devices),
            "params": _param_count(state),
            "step_seconds": statistics.median(times), "compile_seconds": compile_seconds,
            "flops": None if per_device is None else per_device * len(devices),
            "flops_per_device": per_device, "loss": float(metrics["loss"])}


# ----------------------------------------------------------------------------- report

COLUMNS = ("family", "size", "batch", "dtype", "step (ms)", "examples/s", "throughput",
           "TFLOP/s", "GFLOP/step", "MFU", "compile (s)", "notes")
HEADER = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def _gflop(flops: float) -> str:
    """GFLOP with one decimal, or three significant digits below 1 (tiny smoke rows)."""
    gflop = flops / 1e9
    return f"{gflop:,.1f}" if gflop >= 1 else f"{gflop:.3g}"


def format_row(result: dict[str, Any], peak_tflops: float | None) -> str:
    """One markdown row; a failed family's row carries its error in `notes`."""
    if "error" in result:
        error = result["error"].replace("|", "/").replace("\n", " ")
        cells = [result["family"], result["size"]] + ["-"] * (len(COLUMNS) - 3) + [error]
        return "| " + " | ".join(cells) + " |"
    t = result["step_seconds"]
    flops = result["flops"]
    tflops = None if flops is None else flops / t / 1e12
    mfu = ("n/a" if tflops is None or not peak_tflops
           else f"{100 * tflops / (peak_tflops * result['devices']):.1f}%")
    cells = [result["family"], result["size"], str(result["batch"]), result["dtype"],
             f"{1e3 * t:,.1f}", f"{result['batch'] / t:,.1f}",
             f"{result['units_per_step'] / t:,.1f} {result['unit']}/s",
             "n/a" if tflops is None else f"{tflops:.3f}",
             "n/a" if flops is None else _gflop(flops), mfu,
             f"{result['compile_seconds']:.1f}", result["note"]]
    return "| " + " | ".join(cells) + " |"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "base", "large"), default=None,
                        help="config size (default: base on a GPU/TPU, tiny on a CPU)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated subset of {','.join(FAMILIES)}")
    parser.add_argument("--steps", type=int, default=5,
                        help=f"timed steps, after {WARMUP_STEPS} warm-up steps")
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch size for every family (default: each config's)")
    parser.add_argument("--dtype", default="bfloat16",
                        help="compute dtype, where a config has a compute-dtype field")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"one device's peak TFLOP/s for MFU (default {DEFAULT_PEAK_TFLOPS:g}"
                             " on a GPU/TPU, none on a CPU)")
    parser.add_argument("--devices", type=int, default=None,
                        help="local devices to put the data-parallel mesh on (default: all)")
    parser.add_argument("--fast-compile", action="store_true",
                        help="compile without XLA backend optimization (smoke runs: quicker "
                             "compiles, slower and unrepresentative steps)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def run(argv: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Runs the suite as the command line does; returns (results, the markdown table)."""
    args = parse_args(argv)
    on_cpu = jax.default_backend() == "cpu"
    size = args.size or ("tiny" if on_cpu else "base")
    peak = args.peak_tflops or (None if on_cpu else DEFAULT_PEAK_TFLOPS)
    devices = jax.local_devices()[: args.devices] if args.devices else jax.local_devices()
    options = FAST_COMPILE if args.fast_compile else None
    print(f"{jax.default_backend()}: {len(devices)} x {devices[0].device_kind}; size {size}, "
          f"compute {args.dtype} where configurable, {args.steps} timed steps"
          + (", fast compile (times unrepresentative)" if options else ""), flush=True)
    results = []
    for name in [f.strip() for f in args.families.split(",") if f.strip()]:
        try:
            result = time_family(build_family(name, size, args.batch, args.dtype), args.steps,
                                 devices, options)
        except Exception as error:  # noqa: BLE001 (a row per failure; the suite goes on)
            traceback.print_exc()
            result = {"family": name, "size": size,
                      "error": f"{type(error).__name__}: {error}"[:300]}
        results.append(result)
        print(format_row(result, peak), flush=True)
    table = "\n".join([HEADER] + [format_row(r, peak) for r in results])
    print(f"\n{table}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
             "peak_tflops": peak, "results": results}, indent=2))
    return results, table


def failed(results: Sequence[dict[str, Any]]) -> list[str]:
    """Families that raised, or whose step time is not a positive finite number."""
    return [r["family"] for r in results
            if "error" in r or not (math.isfinite(r["step_seconds"]) and r["step_seconds"] > 0)]


def main(argv: Sequence[str] | None = None) -> int:
    results, _ = run(argv)
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
