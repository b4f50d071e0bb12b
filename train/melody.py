r"""Trains the melody embedder on same-melody / different-instrument pairs; fits melody tokens.

    python train/melody.py --config configs/melody/tiny.py --workdir runs/melody_tiny

Every batch holds one pair per melody: two renderings of it (different lead
instruments, re-drawn chords, bass timbre and drums) cropped at the same offset.
Whole melodies are held out for evaluation.

Writes to the work directory: `checkpoints/`, `metrics.jsonl`, `tensorboard/`,
`config.json`, `plots/losses.png`, `melody_retrieval.json` (held-out melody
retrieval across instrumentations: Recall@1 against chance) and `export/`: the
model ("melody") and `rvq.npz`, the residual codebooks of melody tokens
(`audiolm_jax.tokenizers.mulan.MelodyTokenizer.load(WORKDIR/export)`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import BadFileReport, decode_record, make_pair_pipeline
from audiolm_jax.data.sources import group_indices, split_holdout_groups
from audiolm_jax.eval.retrieval import chance_metrics, retrieval_metrics
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models import melody as melody_lib
from audiolm_jax.tokenizers.mulan import MelodyTokenizer, fit_window_codebooks
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import save_exported
from audiolm_jax.training.optimizers import make_optimizer

EVAL_OFFSETS_SECONDS = (0.0, 3.0, 6.0)  # aligned windows compared across renderings


def held_out_windows(source: Any, config: melody_lib.MelodyConfig, field: str,
                     report: BadFileReport) -> tuple[np.ndarray, np.ndarray]:
    """Aligned windows of every held-out clip: ([N, clip_samples] audio, [N] group label).

    A window is labelled (group, offset): the same notes at the same time. Offsets
    past a clip's end are skipped.
    """
    windows, labels = [], []
    window = config.clip_samples
    for i in tqdm(range(len(source)), desc="loading held-out clips", leave=False):
        record = source[i]
        audio = decode_record(record, config.sample_rate, report)
        if audio is None:
            continue
        for k, offset in enumerate(EVAL_OFFSETS_SECONDS):
            start = int(offset * config.sample_rate)
            if start + window <= len(audio):
                windows.append(audio[start:start + window, 0])
                labels.append(int(record[field]) * len(EVAL_OFFSETS_SECONDS) + k)
    if not windows:
        raise ValueError(f"no held-out clip is at least {config.clip_seconds} s long")
    return np.stack(windows), np.asarray(labels)


def melody_retrieval(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each window queries all other windows; the other renderings of its melody at the
    same offset are relevant. Returns the model's and chance's Recall@1/5/10 and mAP."""
    n = len(labels)
    others = ~np.eye(n, dtype=bool)                          # never retrieve yourself
    similarity = (embeddings @ embeddings.T)[others].reshape(n, n - 1)
    relevant = (labels[:, None] == labels[None, :])[others].reshape(n, n - 1)
    keep = relevant.any(axis=1)                              # queries with a sibling
    sim, rel = similarity[keep], relevant[keep]
    out = {f"model_{k}": v for k, v in retrieval_metrics(sim, rel).items()}
    out.update({f"chance_{k}": v for k, v in chance_metrics(rel).items()})
    out["queries"] = int(keep.sum())
    out["candidates"] = int(len(labels) - 1)
    return out


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config`, trains (or resumes), exports and fits the tokens."""
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    model_config = melody_lib.MelodyConfig(**config.model.to_dict())
    model = melody_lib.MelodyEmbedder(model_config)
    source = source_from_config(config.data, progress=loop_config.progress)
    field = config.data.group_field
    train_source, eval_source = split_holdout_groups(source, field, config.data.eval_fraction,
                                                     seed=config.data.seed)
    pipeline = make_pair_pipeline(
        train_source, group_indices(train_source, field), sample_rate=model_config.sample_rate,
        crop_samples=model_config.clip_samples,
        batch_size=config.data.batch_size // jax.process_count(), seed=config.data.seed,
        crops_per_group=config.data.crops_per_group, num_threads=config.data.num_threads)
    tx = make_optimizer(config.optimizer)

    tokenizer = MelodyTokenizer(model_config, None, path=str(workdir))
    windows, labels = held_out_windows(eval_source, model_config, field, pipeline.report)

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        del step
        tokenizer.params = state.params
        return melody_retrieval(tokenizer.embed_window_batch(windows), labels)

    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=melody_lib.make_init_fn(model, tx), train_step=melody_lib.make_train_step(model),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=eval_fn, on_step=on_step)

    if jax.process_index() == 0:
        params = jax.device_get(result.state.params)
        out = save_exported(workdir / "export", melody_lib.MODEL_NAME,
                            dataclasses.asdict(model_config), {"params": params},
                            source=f"train/melody.py step {result.last_step}")
        tokenizer.params = params
        report = melody_retrieval(tokenizer.embed_window_batch(windows), labels)
        report["step"] = result.last_step
        report["tokens"] = fit_window_codebooks(
            train_source, tokenizer.embed_window_batch, model_config.sample_rate,
            model_config.clip_samples, config.rvq, config.data.seed,
            {"model": melody_lib.MODEL_NAME}, out)
        write_text_atomic(workdir / "melody_retrieval.json", json.dumps(report, indent=2))
        trainer_lib.write_loss_plot(
            workdir, {"train: InfoNCE": "train/loss", "held-out melody R@1": "eval/model_R@1"},
            ylabel="loss / recall", title="melody embedder contrastive training")
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


def report(result: loop_lib.LoopResult, config: Any, workdir: Path) -> str:
    report = json.loads((workdir / "melody_retrieval.json").read_text())
    return (f"step {result.last_step}: held-out melody R@1 {report['model_R@1']:.3f} "
            f"(chance {report['chance_R@1']:.3f}, {report['queries']} queries); export in "
            f"{workdir}/export")


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, report)
