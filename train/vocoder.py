r"""Trains the Vocos vocoder (log-mel -> waveform) adversarially.

    python train/vocoder.py --config configs/vocoder/tiny.py --workdir runs/vocoder_tiny \
        [--config.train.num_steps=20000 --config.data.corpus=speech ...]

Writes to the work directory: `checkpoints/` (Orbax: generator and
discriminator state plus the data iterator), `metrics.jsonl`, `tensorboard/`,
`config.json`, and at every evaluation `eval/step_<step>/` with reference,
vocoded and Griffin-Lim wavs of held-out clips, `spectrograms.png` and
`table.md` (log-mel L1 and multi-resolution mel distance of the vocoder
against the Griffin-Lim baseline from the same features, and the ground
truth's zero). At the end: `plots/losses.png` and an export in `export/` that
`infer/vocoder.py --checkpoint WORKDIR` reads. Run it again with the same work
directory to resume.
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
from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import make_audio_pipeline
from audiolm_jax.data.sources import split_for_evaluation
from audiolm_jax.eval import audio_metrics
from audiolm_jax.eval.plots import plot_spectrograms
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models.vocoder import MODEL_NAME, griffin_lim_from_features, mel_features
from audiolm_jax.models.vocoder import train as vocoder_gan
from audiolm_jax.models.vocoder.model import Vocos
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import save_exported


def make_pipeline(config: Any, source: Any, *, crop_samples: int, batch_size: int, seed: int,
                  sharded: bool = True):
    """Training batches (each process its shard), or with `sharded=False` the same whole
    batches on every process (eval)."""
    kwargs = dict(sample_rate=config.model.sample_rate, crop_samples=crop_samples, seed=seed,
                  channels=1, num_threads=config.data.num_threads)
    if not sharded:
        return make_audio_pipeline(source, batch_size=batch_size, shard_index=0, shard_count=1,
                                   **kwargs)
    if batch_size % jax.process_count():
        raise ValueError(f"batch size {batch_size} is not divisible by {jax.process_count()} "
                         "processes")
    return make_audio_pipeline(source, batch_size=batch_size // jax.process_count(), **kwargs)


def _table(rows: list[dict]) -> str:
    lines = ["| system | log-mel L1 (vocoder's mel) | mel distance (multi-resolution) |",
             "|---|---|---|"]
    lines += [f"| {r['system']} | {r['mel_l1']:.3f} | {r['mel_distance']:.3f} |" for r in rows]
    return "\n".join(lines)


def make_eval_fn(config: Any, vocos: Vocos, eval_source: Any, workdir: Path,
                 mesh: jax.sharding.Mesh):
    """Resynthesizes fixed held-out clips; writes wavs, spectrograms and the table."""
    cfg = vocos.config
    samples = int(config.eval.clip_seconds * cfg.sample_rate) // cfg.hop_length * cfg.hop_length
    pipeline = make_pipeline(config, eval_source, crop_samples=samples,
                             batch_size=config.eval.num_clips, seed=config.data.seed + 10_000,
                             sharded=False)
    clips = next(iter(pipeline))["audio"]
    device_clips = mesh_lib.replicate_host_arrays(clips, mesh, "the vocoder's held-out clips")
    eval_step = vocoder_gan.make_eval_step(vocos)

    # The Griffin-Lim baseline does not change during training: computed once.
    @jax.jit
    def griffin_lim(audio):
        features = mel_features(audio, cfg)
        y = griffin_lim_from_features(features, cfg, config.eval.griffin_lim_iters)[..., None]
        y = y[:, :audio.shape[1]]
        return y, {"mel_l1": jnp.mean(jnp.abs(mel_features(y, cfg) - features), axis=(1, 2)),
                   "mel_distance": audio_metrics.mel_distance(y, audio, cfg.sample_rate)}

    gl_audio, gl_metrics = jax.device_get(griffin_lim(device_clips))
    baseline_rows = [
        {"system": "ground truth", "mel_l1": 0.0, "mel_distance": 0.0},
        {"system": f"Griffin-Lim ({config.eval.griffin_lim_iters} iterations, same features)",
         "mel_l1": float(np.mean(gl_metrics["mel_l1"])),
         "mel_distance": float(np.mean(gl_metrics["mel_distance"]))}]

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        out = jax.device_get(eval_step(state["generator"].params, device_clips))
        metrics = {"mel_l1": float(np.mean(out["mel_l1"])),
                   "mel_distance": float(np.mean(out["mel_distance"]))}
        if jax.process_index() == 0:
            out_dir = workdir / "eval" / f"step_{step:06d}"
            reference = np.asarray(clips)
            for i in range(min(config.eval.num_wavs, reference.shape[0])):
                save_audio(out_dir / f"clip{i}_reference.wav", reference[i], cfg.sample_rate)
                save_audio(out_dir / f"clip{i}_vocoder.wav", out["audio"][i], cfg.sample_rate)
                save_audio(out_dir / f"clip{i}_griffin_lim.wav", gl_audio[i], cfg.sample_rate)
            log_mel = lambda a: np.asarray(mel_features(a[None, :, 0], cfg)[0])
            plot_spectrograms(
                [("ground truth", log_mel(reference[0])),
                 (f"vocoder at step {step}: log-mel L1 {out['mel_l1'][0]:.3f}",
                  log_mel(out["audio"][0])),
                 (f"Griffin-Lim: log-mel L1 {gl_metrics['mel_l1'][0]:.3f}", log_mel(gl_audio[0]))],
                out_dir / "spectrograms.png", title=f"vocoder at step {step} (held-out clip)",
                frames_per_second=cfg.frame_rate)
            rows = [*baseline_rows, {"system": f"vocoder, step {step}", **metrics}]
            table = _table(rows)
            write_text_atomic(out_dir / "table.md",
                              f"# step {step}: {len(reference)} held-out clips of "
                              f"{samples / cfg.sample_rate:.2f} s\n\n{table}\n")
            logging.info("step %d:\n%s", step, table)
        return metrics

    return eval_fn


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config` and runs (or resumes) training in `workdir`.

    Args:
      data_iter: replaces the configured pipeline (tests).
      on_step: forwarded to the loop.
    """
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    vocos = vocoder_gan.build_vocos(config)
    discriminators = vocoder_gan.build_discriminators(config)
    source = source_from_config(config.data, progress=loop_config.progress)
    train_source, eval_source = split_for_evaluation(source, config.data)
    pipeline = make_pipeline(config, train_source, crop_samples=vocoder_gan.crop_samples(config),
                             batch_size=config.data.batch_size, seed=config.data.seed)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=vocoder_gan.make_init_fn(vocos, discriminators, config),
        train_step=vocoder_gan.make_train_phases(vocos, discriminators, config),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=make_eval_fn(config, vocos, eval_source, workdir, mesh), on_step=on_step)
    if jax.process_index() == 0:
        gen = jax.device_get(result.state["generator"])
        save_exported(workdir / "export", MODEL_NAME, vocos.config.to_dict(),
                      {"params": gen.params}, source=f"train/vocoder.py step {result.last_step}")
        trainer_lib.write_loss_plot(
            workdir, {"train: log-mel L1": "train/mel", "held-out log-mel L1": "eval/mel_l1",
                      "held-out mel distance": "eval/mel_distance"},
            ylabel="loss / distance", title="vocoder training")
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


def report(result: loop_lib.LoopResult, config: Any, workdir: Path) -> str:
    tables = sorted(workdir.glob("eval/step_*/table.md"))
    table = tables[-1].read_text() + "\n" if tables else ""
    return f"{table}trained to step {result.last_step}; outputs in {workdir}"


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, report)
