r"""Pretrains the w2v-BERT semantic encoder (w2v-BERT, BEST-RQ or HuBERT-style k-means targets).

    python train/semantic.py --config configs/semantic/tiny.py --workdir runs/semantic_tiny \
        [--config.model.pretrain.objective=best_rq --config.train.num_steps=3000 ...]

With `objective=kmeans` the target clusters are fitted first on
`model.kmeans_targets.batches` training batches and saved as
`WORKDIR/target_kmeans.npz`.

Writes to the work directory: `checkpoints/` (Orbax, with the data iterator),
`metrics.jsonl`, `tensorboard/`, `config.json`, `plots/losses.png` (train and
held-out masked-prediction loss and accuracy) and, at the end, the encoder alone
as an export in `export/` (model "w2v_bert") that the semantic tokenizer
(`infer/semantic_tokens.py --encoder WORKDIR/export`) and
`audiolm_jax.convert.w2v_bert.load_w2v_bert` read. Run it again with the same
work directory to resume.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import make_audio_pipeline
from audiolm_jax.data.sources import split_holdout
from audiolm_jax.eval.plots import plot_curves
from audiolm_jax.models import semantic_pretrain as sp
from audiolm_jax.quantization.minibatch_kmeans import KMeansModel, fit_minibatch_kmeans
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import save_exported
from audiolm_jax.training.metrics import read_metrics
from audiolm_jax.training.optimizers import make_optimizer

EXPORT_MODEL = "w2v_bert"


def make_pipeline(config: Any, source: Any, *, batch_size: int, seed: int):
    if batch_size % jax.process_count():
        raise ValueError(f"batch size {batch_size} is not divisible by {jax.process_count()} "
                         "processes")
    sample_rate = config.model.encoder.sample_rate
    return make_audio_pipeline(
        source, sample_rate=sample_rate, crop_samples=int(config.data.crop_seconds * sample_rate),
        batch_size=batch_size // jax.process_count(), seed=seed,
        num_threads=config.data.num_threads)


def target_centroids(config: Any, model: sp.SemanticPretrainModel, source: Any,
                     workdir: Path) -> np.ndarray | None:
    """The "kmeans" objective's target clusters of stacked filterbank frames.

    Fitted once on `kmeans_targets.batches` training batches and kept in
    `WORKDIR/target_kmeans.npz`, so a resumed run predicts the same targets.
    """
    if model.config.objective != "kmeans":
        return None
    path = workdir / "target_kmeans.npz"
    if path.exists():
        return KMeansModel.load(path, expect={"dim": model.encoder_config.feature_projection_input_dim}
                                ).centroids
    featurize = jax.jit(lambda b: sp._featurize(model, b))
    pipeline = make_pipeline(config, source, batch_size=config.data.batch_size,
                             seed=config.data.seed + 20_000)
    frames = []
    for batch, _ in zip(pipeline, range(config.model.kmeans_targets.batches)):
        features, valid = jax.device_get(featurize({k: batch[k] for k in ("audio", "mask")}))
        frames.append(features[valid])
    frames = np.concatenate(frames)
    rng = np.random.default_rng(config.data.seed)

    def batches():
        while True:
            yield frames[rng.integers(0, len(frames), 8192)]

    kmeans, _ = fit_minibatch_kmeans(batches(), model.config.codebook_size,
                                     num_steps=config.model.kmeans_targets.steps,
                                     seed=config.data.seed,
                                     metadata={"features": "stacked fbank", "frames": len(frames)})
    if jax.process_index() == 0:
        kmeans.save(path)
    return kmeans.centroids


def make_eval_fn(config: Any, model: sp.SemanticPretrainModel, eval_source: Any,
                 centroids: np.ndarray | None):
    """Masked-prediction losses on a fixed held-out batch with a fixed mask."""
    batch = next(iter(make_pipeline(config, eval_source, batch_size=config.data.batch_size,
                                    seed=config.data.seed + 10_000)))
    batch = {k: batch[k] for k in ("audio", "mask")}
    evaluate = jax.jit(lambda params: sp.evaluate_batch(model, params, batch,
                                                        jax.random.key(1234), centroids))

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        del step
        return {k: float(v) for k, v in jax.device_get(evaluate(state.params)).items()}

    return eval_fn


def write_loss_plot(workdir: Path, objective: str) -> None:
    rows = read_metrics(workdir)
    train = [r for r in rows if "train/loss" in r]
    evals = [r for r in rows if "eval/mlm_loss" in r]
    if not train:
        return
    curves = {"train: masked-prediction CE": ([r["step"] for r in train],
                                              [r["train/mlm_loss"] for r in train])}
    if objective == "w2v_bert":    # otherwise the total is the masked-prediction CE
        curves["train: total loss"] = ([r["step"] for r in train],
                                       [r["train/loss"] for r in train])
    if evals:
        curves["held-out: masked-prediction CE"] = ([r["step"] for r in evals],
                                                     [r["eval/mlm_loss"] for r in evals])
    if objective == "w2v_bert":
        curves["train: contrastive InfoNCE"] = ([r["step"] for r in train],
                                                [r["train/contrastive_loss"] for r in train])
    plot_curves(curves, workdir / "plots" / "losses.png", ylabel="loss",
                title=f"semantic encoder pretraining ({objective})")


def export_encoder(workdir: Path, model: sp.SemanticPretrainModel, params: Any,
                   step: int) -> Path:
    """Writes the encoder (without pretraining heads) as a "w2v_bert" export."""
    return save_exported(workdir / "export", EXPORT_MODEL,
                         dataclasses.asdict(model.encoder_config),
                         {"params": params["encoder"]},
                         source=f"train/semantic.py step {step} ({model.config.objective})")


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config` and runs (or resumes) pretraining in `workdir`.

    Args:
      data_iter: replaces the configured pipeline (tests).
      on_step: forwarded to the loop.
    """
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    model = sp.build_model(config)
    source = source_from_config(config.data, progress=loop_config.progress)
    train_source, eval_source = split_holdout(source, config.data.eval_fraction,
                                              seed=config.data.seed)
    pipeline = make_pipeline(config, train_source, batch_size=config.data.batch_size,
                             seed=config.data.seed)
    tx = make_optimizer(config.optimizer)
    centroids = target_centroids(config, model, train_source, workdir)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=sp.make_init_fn(model, tx), train_step=sp.make_train_step(model, centroids),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=make_eval_fn(config, model, eval_source, centroids), on_step=on_step)
    if jax.process_index() == 0:
        export_encoder(workdir, model, jax.device_get(result.state.params), result.last_step)
        write_loss_plot(workdir, model.config.objective)
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.config is None or FLAGS.workdir is None:
        raise app.UsageError("--config and --workdir are required")
    logging.getLogger().setLevel(logging.INFO)
    result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if result.history:
        last = result.history[-1]
        print(f"step {result.last_step}: loss {last['loss']:.4f}, masked-prediction accuracy "
              f"{last['mlm_accuracy']:.3f}; encoder export in {FLAGS.workdir}/export")


if __name__ == "__main__":
    # Flags are defined here, not at import, so other scripts can import this module.
    config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
    app.run(main)
