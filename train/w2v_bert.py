r"""Pretrains the w2v-BERT semantic encoder (w2v-BERT, BEST-RQ or HuBERT-style k-means targets).

    python train/w2v_bert.py --config configs/w2v_bert/tiny.py --workdir runs/w2v_bert_tiny \
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
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import make_audio_pipeline
from audiolm_jax.data.sources import split_for_evaluation
from audiolm_jax.models.w2v_bert import pretrain as sp
from audiolm_jax.quantization.minibatch_kmeans import KMeansModel, fit_minibatch_kmeans
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import save_exported
from audiolm_jax.training.optimizers import make_optimizer

EXPORT_MODEL = "w2v_bert"


def make_pipeline(config: Any, source: Any, *, batch_size: int, seed: int,
                  sharded: bool = True):
    """Training batches (each process its shard), or with `sharded=False` the same whole
    batches on every process (eval, k-means targets)."""
    sample_rate = config.model.encoder.sample_rate
    if not sharded:
        return make_audio_pipeline(
            source, sample_rate=sample_rate,
            crop_samples=int(config.data.crop_seconds * sample_rate), batch_size=batch_size,
            seed=seed, num_threads=config.data.num_threads, shard_index=0, shard_count=1)
    if batch_size % jax.process_count():
        raise ValueError(f"batch size {batch_size} is not divisible by {jax.process_count()} "
                         "processes")
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
                             seed=config.data.seed + 20_000, sharded=False)
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
    # Every process fitted on the same (unsharded) frames; process 0's centroids are
    # the ones saved, so every process uses exactly those.
    centroids = mesh_lib.broadcast_from_process_0(np.asarray(kmeans.centroids))
    if jax.process_index() == 0:
        kmeans.save(path)
    return centroids


def make_eval_fn(config: Any, model: sp.SemanticPretrainModel, eval_source: Any,
                 centroids: np.ndarray | None, mesh: jax.sharding.Mesh):
    """Masked-prediction losses on a fixed held-out batch with a fixed mask."""
    batch = next(iter(make_pipeline(config, eval_source, batch_size=config.data.batch_size,
                                    seed=config.data.seed + 10_000, sharded=False)))
    batch = mesh_lib.replicate_host_arrays({k: batch[k] for k in ("audio", "mask")}, mesh,
                                           "the held-out batch")
    evaluate = jax.jit(lambda params: sp.evaluate_batch(model, params, batch,
                                                        jax.random.key(1234), centroids))

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        del step
        return {k: float(v) for k, v in jax.device_get(evaluate(state.params)).items()}

    return eval_fn


def export_encoder(workdir: Path, model: sp.SemanticPretrainModel, params: Any,
                   step: int) -> Path:
    """Writes the encoder (without pretraining heads) as a "w2v_bert" export."""
    return save_exported(workdir / "export", EXPORT_MODEL,
                         dataclasses.asdict(model.encoder_config),
                         {"params": params["encoder"]},
                         source=f"train/w2v_bert.py step {step} ({model.config.objective})")


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
    train_source, eval_source = split_for_evaluation(source, config.data)
    pipeline = make_pipeline(config, train_source, batch_size=config.data.batch_size,
                             seed=config.data.seed)
    tx = make_optimizer(config.optimizer)
    centroids = target_centroids(config, model, train_source, workdir)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=sp.make_init_fn(model, tx), train_step=sp.make_train_step(model, centroids),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=make_eval_fn(config, model, eval_source, centroids, mesh), on_step=on_step)
    if jax.process_index() == 0:
        export_encoder(workdir, model, jax.device_get(result.state.params), result.last_step)
        objective = model.config.objective
        curves = {"train: masked-prediction CE": "train/mlm_loss",
                  "held-out: masked-prediction CE": "eval/mlm_loss"}
        if objective == "w2v_bert":    # otherwise the total is the masked-prediction CE
            curves.update({"train: total loss": "train/loss",
                           "train: contrastive InfoNCE": "train/contrastive_loss"})
        trainer_lib.write_loss_plot(workdir, curves, ylabel="loss",
                                    title=f"semantic encoder pretraining ({objective})")
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


def report(result: loop_lib.LoopResult, config: Any, workdir: Path) -> str:
    if not result.history:
        return f"nothing to train: already at step {result.last_step}; export in {workdir}/export"
    last = result.history[-1]
    return (f"step {result.last_step}: loss {last['loss']:.4f}, masked-prediction accuracy "
            f"{last['mlm_accuracy']:.3f}; encoder export in {workdir}/export")


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, report)
