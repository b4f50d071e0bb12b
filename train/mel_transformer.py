r"""Trains the masked log-mel transformer.

    python train/mel_transformer.py --config configs/mel_transformer/tiny.py \
        --workdir runs/mel_tiny [--config.train.num_steps=1000 ...]

Writes to the work directory: `checkpoints/` (Orbax), `metrics.jsonl`,
`tensorboard/`, `config.json`, `plots/reconstruction_<step>.png` (ground truth,
masked input, reconstruction) and `plots/loss.png`. Run it again with the same
work directory to resume.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import make_audio_pipeline
from audiolm_jax.eval.plots import plot_spectrograms
from audiolm_jax.models import mel_transformer as mt
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.optimizers import make_optimizer


def make_pipeline(config: Any, source: Any, seed_offset: int = 0, batch_size: int | None = None,
                  sharded: bool = True):
    """Training batches (each process its shard), or with `sharded=False` the same whole
    batches on every process (eval)."""
    data = config.data
    global_batch = batch_size or data.batch_size
    if not sharded:
        return make_audio_pipeline(
            source, sample_rate=config.model.sample_rate,
            crop_samples=int(data.crop_seconds * config.model.sample_rate),
            batch_size=global_batch, seed=data.seed + seed_offset, num_threads=data.num_threads,
            shard_index=0, shard_count=1)
    if global_batch % jax.process_count():
        raise ValueError(f"data.batch_size={global_batch} is not divisible by "
                         f"{jax.process_count()} processes")
    return make_audio_pipeline(
        source, sample_rate=config.model.sample_rate,
        crop_samples=int(data.crop_seconds * config.model.sample_rate),
        batch_size=global_batch // jax.process_count(), seed=data.seed + seed_offset,
        keep_fields=(), num_threads=data.num_threads)


def make_eval_fn(config: Any, model: mt.MelTransformer, source: Any, workdir: Path,
                 mesh: jax.sharding.Mesh):
    """Reconstructs a fixed batch, writes a spectrogram PNG, returns eval losses."""
    eval_batch = next(iter(make_pipeline(config, source, seed_offset=10_000, batch_size=4,
                                         sharded=False)))
    eval_batch = mesh_lib.replicate_host_arrays(eval_batch, mesh, "the held-out batch")
    recon = jax.jit(lambda params, audio, mask, rng: mt.reconstruct(model, params, audio, mask,
                                                                      rng, config))
    plots = workdir / "plots"

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        out = jax.device_get(recon(state.params, eval_batch["audio"], eval_batch["mask"],
                                   jax.random.key(1234)))
        if jax.process_index() == 0:
            plots.mkdir(parents=True, exist_ok=True)
            masked = np.where(out["hidden"][0][:, None], out["mel"][0].min(), out["mel"][0])
            fps = config.model.sample_rate / config.model.hop_length
            plot_spectrograms(
                [("ground truth", out["mel"][0]), ("input (hidden spans blanked)", masked),
                 (f"reconstruction (L1 on hidden frames {float(out['loss']):.3f}, "
                  f"visible-mean baseline {float(out['baseline_loss']):.3f})", out["pred"][0])],
                plots / f"reconstruction_{step:06d}.png", title=f"step {step}",
                frames_per_second=fps)
        return {"loss": float(out["loss"]), "baseline_loss": float(out["baseline_loss"])}

    return eval_fn


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config` and runs (or resumes) training in `workdir`.

    Args:
      data_iter: replaces the configured pipeline (tests wrap it to record batches).
      on_step: forwarded to the loop.
    """
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    source = source_from_config(config.data, progress=loop_config.progress)
    pipeline = make_pipeline(config, source)
    model = mt.build_model(config)
    tx = make_optimizer(config.optimizer)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh,
        rules=rules, init_fn=mt.make_init_fn(model, tx), train_step=mt.make_train_step(model, config),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=make_eval_fn(config, model, source, workdir, mesh), on_step=on_step)
    if jax.process_index() == 0:
        trainer_lib.write_loss_plot(
            workdir, {"model (train)": "train/loss", "visible-mean baseline": "train/baseline_loss"},
            ylabel="L1 on hidden log-mel frames", title="masked log-mel reconstruction", name="loss.png")
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


def report(result: loop_lib.LoopResult, config: Any, workdir: Path) -> str:
    if not result.history:
        return f"nothing to train: already at step {result.last_step}; outputs in {workdir}"
    last = result.history[-1]
    return (f"step {result.last_step}: loss {last['loss']:.4f} "
            f"(visible-mean baseline {last['baseline_loss']:.4f}); outputs in {workdir}")


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, report)
