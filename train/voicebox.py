r"""Trains one of Voicebox's networks: the audio model or the duration model.

    python train/voicebox.py --config configs/voicebox/tiny.py --workdir runs/voicebox_tiny
    python train/voicebox.py --config configs/voicebox/tiny_duration.py \
        --workdir runs/voicebox_duration_tiny
    # the regression baseline: the same network, L1 on masked frames
    python train/voicebox.py --config configs/voicebox/tiny_regression.py \
        --workdir runs/voicebox_regression_tiny

Data: aligned utterances (`audiolm_jax.data.aligned`): the built-in speech
corpus, or any manifest whose rows carry `phonemes`, `phoneme_starts` and
`phoneme_ends` (the CTC forced aligner writes them). `data.held_out_speakers`
whole speakers are never trained on; they make the evaluation batch.

Writes to the work directory: `checkpoints/` (Orbax, with the data iterator),
`metrics.jsonl`, `tensorboard/`, `config.json`, `phones.json` (the phone
vocabulary), `bundle.json` (audio model, when `export.duration_model` names the
duration model's export: the work directory then loads as a Voicebox bundle), at every evaluation `eval/step_<step>/` (audio model: held-out
utterances whose last 70 % was regenerated from the first 30 % and the
phones, as `spectrograms.png` and wavs through `eval.vocoder` or
Griffin-Lim), and at the end `plots/losses.png` and `export/`. Run it again
with the same work directory to resume.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.audio.io import save_audio
from audiolm_jax.data.aligned import (
    PAUSE_SECONDS,
    AlignedExample,
    build_vocab,
    make_aligned_pipeline,
    speech_frames,
)
from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.sources import split_held_out_speakers
from audiolm_jax.eval.plots import plot_spectrograms
from audiolm_jax.files import write_json_atomic
from audiolm_jax.models import vocoder as vocoder_lib
from audiolm_jax.models.voicebox import MODEL_NAME, flow, inference
from audiolm_jax.models.voicebox import train as vb_train
from audiolm_jax.models.voicebox.model import VoiceboxTransformer
from audiolm_jax.sampling import ode
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import save_exported

CONTEXT_FRACTION = 0.3   # evaluation: the share of each held-out utterance given as context


def shapes_of(config: Any, training: bool = True) -> AlignedExample:
    return AlignedExample(config.data.max_frames, config.data.max_phones, config.mel.hop_length,
                          pause_seconds=config.data.get("pause_seconds", PAUSE_SECONDS),
                          pair_probability=config.data.get("pair_probability", 0.0)
                          if training else 0.0)


def make_pipeline(config: Any, source: Any, vocab: Any, *, batch_size: int, seed: int,
                  sharded: bool = True):
    kwargs = dict(vocab=vocab, sample_rate=config.mel.sample_rate,
                  shapes=shapes_of(config, training=sharded),
                  seed=seed, num_threads=config.data.num_threads,
                  with_audio=config.kind == "audio")
    if not sharded:
        return make_aligned_pipeline(source, batch_size=batch_size, shard_index=0, shard_count=1,
                                     **kwargs)
    if batch_size % jax.process_count():
        raise ValueError(f"data.batch_size={batch_size} is not divisible by "
                         f"{jax.process_count()} processes")
    return make_aligned_pipeline(source, batch_size=batch_size // jax.process_count(), **kwargs)


def _vocoder_fn(config: Any):
    """`log-mel [b, t, 100] -> audio [b, samples]` (jitted): the configured vocoder
    export, else Griffin-Lim."""
    vocos_config = vocoder_lib.VocosConfig(
        sample_rate=config.mel.sample_rate, n_fft=config.mel.n_fft,
        hop_length=config.mel.hop_length, n_mels=config.mel.n_mels,
        log_floor=config.mel.log_floor)
    if config.eval.vocoder:
        vocos_config, variables = vocoder_lib.load(config.eval.vocoder)
        model = vocoder_lib.Vocos(vocos_config)
        return jax.jit(lambda mel: model.apply(variables, mel)), "vocoder"
    return (jax.jit(lambda mel: vocoder_lib.griffin_lim_from_features(mel, vocos_config)),
            "Griffin-Lim")


def make_eval_fn(config: Any, model: VoiceboxTransformer, eval_source: Any, vocab: Any,
                 workdir: Path, mesh: jax.sharding.Mesh):
    """Held-out loss on a fixed batch; for the audio model also continuations of
    held-out utterances, written as wavs and spectrograms."""
    batch = next(iter(make_pipeline(config, eval_source, vocab,
                                    batch_size=max(config.eval.num_clips, 4),
                                    seed=config.data.seed + 10_000, sharded=False)))
    device_batch = mesh_lib.replicate_host_arrays(batch, mesh, "the held-out batch")
    eval_loss = vb_train.make_eval_loss(model, config)
    if config.kind != "audio":
        return lambda state, step: {
            "loss": float(eval_loss(state_lib.inference_params(state), device_batch))}
    vocode, vocoder_name = _vocoder_fn(config)
    cfg = model.config

    @jax.jit
    def continue_utterances(params, batch):
        mel, phones, valid = vb_train.batch_features(batch, config)
        lengths = jnp.sum(valid, axis=-1)
        mask = (jnp.arange(valid.shape[1])[None] >= jnp.round(CONTEXT_FRACTION * lengths)[:, None])
        out = flow.sample(model, params, flow.normalize(mel, cfg), mask, phones, valid,
                          jax.random.key(0), num_steps=config.eval.num_steps,
                          method=config.eval.method, guidance=config.eval.guidance)
        return mel, flow.denormalize(out, cfg), mask & valid, valid

    speech = speech_frames(batch["frame_phones"], batch["frame_valid"], vocab)
    passes = ode.num_function_evals(config.eval.method, config.eval.num_steps) * (
        2 if config.eval.guidance else 1)

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        params = state_lib.inference_params(state)
        metrics = {"loss": float(eval_loss(params, device_batch))}
        mel, generated, mask, valid = jax.device_get(continue_utterances(params, device_batch))
        # Speech frames only: generated trailing silence is easy and would flatter the mean.
        counted = mask & speech
        metrics["generated_mel_l1"] = float(np.sum(np.abs(generated - mel).mean(-1) * counted)
                                            / max(counted.sum(), 1))
        if jax.process_index() == 0:
            out_dir = workdir / "eval" / f"step_{step:06d}"
            n = min(config.eval.num_clips, mel.shape[0])
            audio = np.asarray(vocode(jnp.asarray(generated[:n])))
            for i in range(n):
                frames = int(valid[i].sum())
                samples = (frames - 1) * config.mel.hop_length
                save_audio(out_dir / f"clip{i}_continued.wav", audio[i, :samples],
                           config.mel.sample_rate)
            panels = [("ground truth (held-out speaker)", mel[0, :int(valid[0].sum())]),
                      (f"first {CONTEXT_FRACTION:.0%} given, rest generated ("
                       f"{config.eval.num_steps} {config.eval.method} steps, {passes} network "
                       f"passes, guidance {config.eval.guidance:g}); wavs through "
                       f"{vocoder_name}",
                       generated[0, :int(valid[0].sum())])]
            plot_spectrograms(panels, out_dir / "spectrograms.png",
                              title=f"Voicebox at step {step}",
                              frames_per_second=config.mel.sample_rate / config.mel.hop_length)
            logging.info("step %d: held-out loss %.4f, generated speech-frame mel L1 %.3f", step,
                         metrics["loss"], metrics["generated_mel_l1"])
        return metrics

    return eval_fn


def export_config(config: Any, vocab: Any) -> dict:
    """What `export/model.json` records: the network, its kind, features and phones, the
    longest example it trained on and the gap that made a pause."""
    return {"kind": config.kind, "model": vb_train.voicebox_config_from(config).to_dict(),
            "mel": config.mel.to_dict(), "phones": list(vocab.tokens),
            "max_frames": int(config.data.max_frames),
            "pause_seconds": float(config.data.pause_seconds)}


def write_bundle(config: Any, workdir: Path) -> Path | None:
    """`workdir/bundle.json` for an audio model's run when `export.duration_model` names
    the duration model's export: what `models.voicebox.inference.load(workdir)` reads.
    Checked by loading it."""
    if config.kind != "audio" or not config.export.duration_model:
        return None
    bundle = inference.Bundle(audio_model="export", duration_model=config.export.duration_model,
                              vocoder=config.export.vocoder or None,
                              recognizer=config.export.recognizer)
    path = bundle.write(workdir)
    inference.load(workdir)
    logging.info("wrote %s (load it with models.voicebox.inference.load(%r))", path,
                 str(workdir))
    return path


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config` and runs (or resumes) training in `workdir`."""
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    source = source_from_config(config.data, progress=loop_config.progress)
    records = [source[i] for i in range(len(source))]
    vocab = build_vocab(records)
    with config.unlocked():
        config.model.num_phones = len(vocab)
    train_source, eval_source = split_held_out_speakers(source, config.data.held_out_speakers,
                                                        seed=config.data.seed)
    if jax.process_index() == 0:
        write_json_atomic(workdir / "phones.json", list(vocab.tokens))
    model = vb_train.build_model(config)
    pipeline = make_pipeline(config, train_source, vocab, batch_size=config.data.batch_size,
                             seed=config.data.seed)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=vb_train.make_init_fn(model, config),
        train_step=vb_train.make_train_step(model, config),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=make_eval_fn(config, model, eval_source, vocab, workdir, mesh), on_step=on_step)
    if jax.process_index() == 0:
        params = jax.device_get(state_lib.inference_params(result.state))
        save_exported(workdir / "export", MODEL_NAME, export_config(config, vocab),
                      {"params": params}, source=f"train/voicebox.py step {result.last_step}")
        curves = {"train loss": "train/loss", "held-out loss": "eval/loss"}
        if config.kind == "audio":
            curves["held-out generated speech-frame mel L1"] = "eval/generated_mel_l1"
        write_bundle(config, workdir)
        trainer_lib.write_loss_plot(workdir, curves, ylabel="loss",
                                    title=f"Voicebox {config.kind} model "
                                          f"({config.model.objective})")
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, trainer_lib.report_train_loss)
