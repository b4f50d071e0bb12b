r"""Trains MuLan (audio tower + BERT text tower, symmetric InfoNCE) and fits MuLan tokens.

    python train/mulan.py --config configs/mulan/tiny.py --workdir runs/mulan_tiny
    # text tower from an imported checkpoint, frozen:
    python train/mulan.py --config configs/mulan/tiny.py --workdir runs/mulan_minilm \
        --config.model.text_init=runs/minilm --config.model.freeze_text=True

Trains on the built-in music corpus (captions from `caption`) or any source whose
records carry a `caption`. Whole melodies are held out (`data.group_field`), so
the held-out clips and captions were never seen.

Writes to the work directory: `checkpoints/`, `metrics.jsonl`, `tensorboard/`,
`config.json`, `tokenizer.json` (learned on the training captions when the text
tower starts from scratch), `plots/losses.png`, `retrieval.json` (held-out
Recall@k / mAP both ways) and `export/`: the model ("mulan"), its tokenizer and
`rvq.npz`, the residual codebooks of MuLan tokens fitted on the training clips'
embeddings (`audiolm_jax.tokenizers.mulan.MuLanTokenizer.load(WORKDIR/export)`).
Run it again with the same work directory to resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.convert.bert import load_bert
from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import BadFileReport, decode_record, make_audio_pipeline
from audiolm_jax.data.sources import WithFields, split_holdout_groups
from audiolm_jax.eval.retrieval import retrieval_metrics
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models import mulan as mulan_lib
from audiolm_jax.text.wordpiece import TOKENIZER_FILE, WordPieceTokenizer
from audiolm_jax.tokenizers.mulan import MuLanEmbedder, fit_window_codebooks
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import save_exported
from audiolm_jax.training.optimizers import make_optimizer


def captions_of(source: Any) -> list[str]:
    """Every record's `caption` (or `text`), or a ValueError naming the first record without."""
    captions = []
    for i in range(len(source)):
        record = source[i]
        caption = record.get("caption", record.get("text"))
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"record {i} ({record.get('path', '?')}) has no caption: MuLan "
                             "trains on (audio, caption) pairs")
        captions.append(caption)
    return captions


def text_tower(config: Any, workdir: Path, train_captions: list[str]
               ) -> tuple[Any, dict | None, WordPieceTokenizer]:
    """(BertConfig or None, imported text params or None, tokenizer).

    With `model.text_init`, the imported checkpoint's config, weights and tokenizer.
    Without, the config's BERT shape and a WordPiece vocabulary learned on the
    training captions (kept in WORKDIR/tokenizer.json so a resume reuses it).
    """
    if config.model.text_init:
        bert_config, variables, tokenizer = load_bert(config.model.text_init)
        return bert_config, variables["params"], tokenizer
    path = workdir / TOKENIZER_FILE
    if path.is_file():
        tokenizer = WordPieceTokenizer.from_file(path)
    else:
        tokenizer = WordPieceTokenizer.train(train_captions, config.model.tokenizer_vocab_size)
        if jax.process_index() == 0:
            tokenizer.save(path)
    return None, None, tokenizer


def load_clips(source: Any, sample_rate: int, report: BadFileReport) -> list[np.ndarray]:
    clips = []
    for i in tqdm(range(len(source)), desc="loading held-out clips", leave=False):
        audio = decode_record(source[i], sample_rate, report)
        if audio is None:
            raise ValueError(f"held-out record {i} is unreadable; see the warning above")
        clips.append(audio[:, 0])
    return clips


def evaluate_retrieval(embedder: MuLanEmbedder, clips: list[np.ndarray],
                       captions: list[str]) -> dict[str, float]:
    """Held-out text -> music and music -> text retrieval; each caption's clip is relevant."""
    audio = np.stack([embedder.embed_audio(c, embedder.sample_rate) for c in clips])
    text = embedder.embed_text(captions)
    similarity = text @ audio.T
    relevant = np.eye(len(captions), dtype=bool)
    out = {f"text2music_{k}": v for k, v in retrieval_metrics(similarity, relevant).items()}
    out.update({f"music2text_{k}": v
                for k, v in retrieval_metrics(similarity.T, relevant).items()})
    return out


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config`, trains (or resumes), exports and fits the tokens."""
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    source = source_from_config(config.data, progress=loop_config.progress)
    train_source, eval_source = split_holdout_groups(source, config.data.group_field,
                                                     config.data.eval_fraction,
                                                     seed=config.data.seed)
    train_captions = captions_of(train_source)
    imported_config, imported_params, tokenizer = text_tower(config, workdir, train_captions)
    mulan_config = mulan_lib.build_config(config.model, imported_config)
    tokenizer.check_compatible(mulan_config.text, f"the text tower of {config.model_name}")
    # The export records the vocabulary, so a same-size tokenizer with other tokens
    # is refused when the embedder loads.
    mulan_config = dataclasses.replace(mulan_config, text=dataclasses.replace(
        mulan_config.text, vocab_hash=tokenizer.vocab_hash))
    model = mulan_lib.MuLan(mulan_config, remat=config.model.remat,
                            freeze_text=config.model.freeze_text)

    tokens = tokenizer.encode(train_captions, mulan_config.max_text_length)
    fields = {"text_ids": list(tokens.ids), "text_mask": list(tokens.mask)}
    sample_rate = mulan_config.audio.sample_rate
    pipeline = make_audio_pipeline(
        WithFields(train_source, fields), sample_rate=sample_rate,
        crop_samples=mulan_config.audio.clip_samples,
        batch_size=config.data.batch_size // jax.process_count(), seed=config.data.seed,
        keep_fields=("text_ids", "text_mask"), num_threads=config.data.num_threads)

    tx = make_optimizer(config.optimizer)

    def post_init(state, shardings):
        if imported_params is None:
            return state
        params = dict(state.params)
        params["text_tower"] = jax.device_put(imported_params, shardings.params["text_tower"])
        logging.info("text tower starts from %s%s", config.model.text_init,
                     " (frozen)" if config.model.freeze_text else "")
        return state.replace(params=params)

    embedder = MuLanEmbedder(mulan_config, None, tokenizer, str(workdir))
    eval_clips = load_clips(eval_source, sample_rate, pipeline.report)
    eval_captions = captions_of(eval_source)

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        del step
        embedder.params = state.params
        return evaluate_retrieval(embedder, eval_clips, eval_captions)

    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=mulan_lib.make_init_fn(model, tx, config.model.freeze_text),
        train_step=mulan_lib.make_train_step(model),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=eval_fn, on_step=on_step, post_init=post_init)

    if jax.process_index() == 0:
        params = jax.device_get(result.state.params)
        out = save_exported(workdir / "export", mulan_lib.MODEL_NAME, mulan_config.to_dict(),
                            {"params": params},
                            source=f"train/mulan.py step {result.last_step}")
        tokenizer.save(out / TOKENIZER_FILE)
        embedder.params = params
        report = evaluate_retrieval(embedder, eval_clips, eval_captions)
        report.update(step=result.last_step, held_out_clips=len(eval_clips))
        report["tokens"] = fit_window_codebooks(
            train_source, embedder.embed_window_batch, sample_rate,
            mulan_config.audio.clip_samples, config.rvq, config.data.seed,
            {"model": mulan_lib.MODEL_NAME, "embedding": "audio"}, out)
        write_text_atomic(workdir / "retrieval.json", json.dumps(report, indent=2))
        trainer_lib.write_loss_plot(
            workdir, {"train: InfoNCE": "train/loss",
                      "held-out text->music R@1": "eval/text2music_R@1",
                      "held-out music->text R@1": "eval/music2text_R@1"},
            ylabel="loss / recall", title="MuLan contrastive training")
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


def report(result: loop_lib.LoopResult, config: Any, workdir: Path) -> str:
    report = json.loads((workdir / "retrieval.json").read_text())
    return (f"step {result.last_step}: held-out text->music R@1 {report['text2music_R@1']:.3f}, "
            f"R@10 {report['text2music_R@10']:.3f}; music->text R@1 "
            f"{report['music2text_R@1']:.3f} ({report['held_out_clips']} clips); export in "
            f"{workdir}/export")


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, report)
