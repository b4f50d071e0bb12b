r"""Trains or fine-tunes F5-TTS with the package's CFM loss (span infilling, 70-100 %).

    # fine-tune the released weights (convert them first, see docs/f5tts.md)
    python train/f5tts.py --config configs/f5tts/base.py --workdir runs/f5tts_ft \
        --config.train.init_from=exports/f5tts
    # a tiny model from scratch on a CPU
    python train/f5tts.py --config configs/f5tts/tiny.py --workdir runs/f5tts_tiny

Data: any source of utterances with a transcript (`text`) and audio (`path`, or
`audio` + `sample_rate`): the built-in speech corpus by default (24 kHz, its
`text` field), or `data.source=folder` with sidecar `.txt` files. Each example is
a whole utterance (the text covers all of it, so nothing is cropped): its audio
zero-padded to `data.max_frames` mel frames, its characters as vocabulary ids
(-1 padded to `data.max_chars`). Utterances longer than either are skipped and
counted; characters the vocabulary lacks are left out and counted (both logged).
`data.held_out_speakers` whole speakers make the held-out loss's batch.

The vocabulary: `data.vocab` (a vocab.txt), else the `train.init_from` export's
(whose `model` block then replaces the config's, so a release of any width
fine-tunes without editing the config), else the source's own characters with
the space first (id 0, the package's filler-and-unknown entry).

Writes to the work directory: `checkpoints/` (Orbax, with the data iterator),
`metrics.jsonl`, `tensorboard/`, `config.json`, `vocab.txt`, at the end
`plots/losses.png` and `export/` (loadable with `models.f5tts.load` and
`infer/tts.py --model f5tts --checkpoint WORKDIR`; it names `export.vocoder`).
Run it again with the same work directory to resume.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grain
import jax
import numpy as np

from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import AudioPipeline, BadFileReport, decode_record
from audiolm_jax.data.sources import split_for_evaluation
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models.f5tts import MODEL_NAME
from audiolm_jax.models.f5tts import train as f5_train
from audiolm_jax.models.f5tts.pipeline import VOCAB_FILE, read_vocab
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import state as state_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import MODEL_FILE, save_exported


class SkipCounter:
    """Utterances left out for being too long, and characters dropped; thread-safe,
    logged the first time each kind occurs."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, n: int = 1, detail: str = "") -> None:
        with self._lock:
            first = kind not in self.counts
            self.counts[kind] += n
        if first:
            logging.warning("f5tts data: %s%s (counted in summary.json)", kind,
                            f" ({detail})" if detail else "")


def export_header(init_from: str) -> dict | None:
    """The `config` of the export `init_from` names (its model and vocabulary), or None."""
    if not init_from:
        return None
    path = Path(init_from)
    if not (path / MODEL_FILE).is_file() and (path / "export" / MODEL_FILE).is_file():
        path = path / "export"
    header = json.loads((path / MODEL_FILE).read_text())
    if header.get("model") != MODEL_NAME:
        raise ValueError(f"train.init_from={init_from} is an exported {header.get('model')!r} "
                         f"model, not {MODEL_NAME!r}")
    return header["config"]


def vocabulary(config: Any, source: Any) -> list[str]:
    """The run's characters (see the module doc); sets `config.model` to fit them."""
    header = export_header(config.train.init_from)
    if config.data.vocab:
        vocab = read_vocab(config.data.vocab)
    elif header is not None:
        vocab = list(header["vocab"])
    else:
        chars = {c for i in range(len(source)) for c in str(source[i].get("text", ""))}
        vocab = [" "] + sorted(chars - {" "})
    with config.unlocked():
        if header is not None:
            config.model.update(header["model"])
        else:
            config.model.text_num_embeds = len(vocab)
    if len(vocab) != config.model.text_num_embeds:
        raise ValueError(f"the vocabulary has {len(vocab)} entries, the model's text table "
                         f"{config.model.text_num_embeds}: data.vocab does not fit init_from")
    return vocab


def f5_example(record: dict, audio: np.ndarray, ids: dict[str, int], max_frames: int,
               max_chars: int, hop: int, skipped: SkipCounter) -> dict | None:
    """One padded example: `audio` [(max_frames - 1) * hop], `text` [max_chars] (-1
    padded), `frames` [] int32; None when the utterance does not fit."""
    text = str(record.get("text", "")).strip()
    known = [ids[c] for c in text if c in ids]
    if len(known) < len(text):
        skipped.add("characters outside the vocabulary dropped", len(text) - len(known),
                    f"e.g. {sorted({c for c in text if c not in ids})[:5]}")
    max_samples = (max_frames - 1) * hop
    if not known:
        skipped.add("utterances without text")
        return None
    if len(audio) > max_samples or len(known) > max_chars:
        skipped.add("utterances longer than data.max_frames / max_chars")
        return None
    out_audio = np.zeros(max_samples, np.float32)
    out_audio[:len(audio)] = audio
    out_text = np.full(max_chars, -1, np.int32)
    out_text[:len(known)] = known
    return {"audio": out_audio, "text": out_text, "frames": np.int32(1 + len(audio) // hop)}


def make_pipeline(config: Any, source: Any, vocab: list[str], *, batch_size: int, seed: int,
                  skipped: SkipCounter, shuffle: bool = True, sharded: bool = True
                  ) -> AudioPipeline:
    """Batches of `f5_example`s over `source` (this process's shard when `sharded`)."""
    cfg = f5_train.f5_config_from(config)
    ids = {c: i for i, c in enumerate(vocab)}
    shard_index, shard_count = (jax.process_index(), jax.process_count()) if sharded else (0, 1)
    if batch_size % shard_count:
        raise ValueError(f"data.batch_size={batch_size} is not divisible by {shard_count} "
                         "processes")
    report = BadFileReport()
    ds = grain.MapDataset.source(source)
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(None)

    def load(record: dict) -> dict | None:
        if record.get("path") in report.files:
            return None
        audio = decode_record(record, cfg.sample_rate, report)
        if audio is None:
            report.check_some_usable(len(source), repr(source))
            return None
        report.add_good(record.get("path", "?"))
        return f5_example(record, audio[:, 0], ids, config.data.max_frames,
                          config.data.max_chars, cfg.hop_length, skipped)

    ds = ds.map(load).filter(lambda x: x is not None)
    read = grain.ReadOptions(num_threads=config.data.num_threads, prefetch_buffer_size=4)
    return AudioPipeline(ds.to_iter_dataset(read).batch(batch_size // shard_count,
                                                        drop_remainder=True), report)


def make_eval_fn(config: Any, model: Any, eval_source: Any, vocab: list[str],
                 mesh: jax.sharding.Mesh, skipped: SkipCounter):
    """The held-out loss on one fixed batch (fixed span, noise and t draws)."""
    batch = next(iter(make_pipeline(config, eval_source, vocab,
                                    batch_size=config.eval.batch_size,
                                    seed=config.data.seed + 10_000, skipped=skipped,
                                    sharded=False)))
    device_batch = mesh_lib.replicate_host_arrays(batch, mesh, "the held-out batch")
    eval_loss = f5_train.make_eval_loss(model, config)

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        loss = float(eval_loss(state_lib.inference_params(state), device_batch))
        logging.info("step %d: held-out loss %.4f", step, loss)
        return {"loss": loss}

    return eval_fn


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config` and runs (or resumes) training in `workdir`."""
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    source = source_from_config(config.data, progress=loop_config.progress)
    vocab = vocabulary(config, source)
    train_source, eval_source = split_for_evaluation(source, config.data)
    if jax.process_index() == 0:
        write_text_atomic(workdir / VOCAB_FILE, "\n".join(vocab) + "\n")
    model = f5_train.build_model(config)
    skipped = SkipCounter()
    pipeline = make_pipeline(config, train_source, vocab, batch_size=config.data.batch_size,
                             seed=config.data.seed, skipped=skipped)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=f5_train.make_init_fn(model, config),
        train_step=f5_train.make_train_step(model, config),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=make_eval_fn(config, model, eval_source, vocab, mesh, skipped),
        on_step=on_step)
    if jax.process_index() == 0:
        params = jax.device_get(state_lib.inference_params(result.state))
        export = {"model": f5_train.f5_config_from(config).to_dict(), "vocab": vocab,
                  "vocoder": config.export.vocoder or None}
        save_exported(workdir / "export", MODEL_NAME, export, {"params": params},
                      source=f"train/f5tts.py step {result.last_step}")
        write_text_atomic(workdir / "export" / VOCAB_FILE, "\n".join(vocab) + "\n")
        trainer_lib.write_loss_plot(workdir, {"train loss": "train/loss",
                                              "held-out loss": "eval/loss"},
                                    ylabel="CFM loss (masked frames)", title="F5-TTS")
    if skipped.counts:
        logging.warning("f5tts data: %s", dict(skipped.counts))
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, trainer_lib.report_train_loss)
