r"""Fine-tunes a semantic encoder with a linear CTC head into a phoneme recognizer.

    python train/ctc.py --config configs/ctc/tiny.py --workdir runs/ctc_tiny \
        --config.encoder_path=runs/w2v_bert_tiny/export [--config.train.num_steps=2000 ...]

Data: the built-in speech corpus's whole utterances with their espeak phoneme
sequences (stress removed). `data.held_out_speakers` speakers (every clip of
theirs) are kept out for the phoneme error rate; utterances are padded to
whole-second buckets so each bucket compiles once. The encoder starts from
`encoder_path` (a "w2v_bert" export, e.g. `train/w2v_bert.py`'s, or a converted
w2v-BERT 2.0) and stays frozen for `model.freeze_encoder_steps` steps while the
head learns.

Writes: `checkpoints/`, `metrics.jsonl`, `eval/per_<step>.md` (PER and sample
transcripts), `plots/losses.png`, and the recognizer export in `export/` that
`PhonemeRecognizer.load` reads. Run it again with the same work directory to
resume.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python train/x.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
from tqdm.auto import tqdm

from audiolm_jax.audio.augment import Augmenter
from audiolm_jax.audio.io import load_audio
from audiolm_jax.convert.w2v_bert import load_w2v_bert
from audiolm_jax.data.corpora import build_corpus
from audiolm_jax.data.pipeline import BadFileReport
from audiolm_jax.data.sources import ManifestSource, split_held_out_speakers
from audiolm_jax.eval.sequence import per
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models import ctc as pr
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.optimizers import make_optimizer


class Utterances:
    """Whole utterances in memory, bucketed by length: audio, lengths and phone labels.

    Attributes:
      audio: {bucket seconds: [n, bucket * rate] float32}; lengths and labels likewise.
      phones: the label vocabulary (id i + 1 is phones[i]).
    """

    def __init__(self, records: list[dict], sample_rate: int, phones: list[str] | None = None,
                 desc: str = "utterances"):
        self.sample_rate = sample_rate
        sequences = [pr.normalize_phones(r["phonemes"]) for r in records]
        self.phones = phones or sorted({p for s in sequences for p in s})
        index = {p: i + 1 for i, p in enumerate(self.phones)}
        clips = [load_audio(r["path"], sample_rate)[0].mean(axis=1)
                 for r in tqdm(records, desc=desc)]
        self.references = sequences
        self.clips = clips
        buckets: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            buckets.setdefault(int(np.ceil(len(clip) / sample_rate)), []).append(i)
        max_labels = max(len(s) for s in sequences)
        self.buckets = {}
        for seconds, members in sorted(buckets.items()):
            audio = np.zeros((len(members), seconds * sample_rate), np.float32)
            labels = np.zeros((len(members), max_labels), np.int32)
            for row, i in enumerate(members):
                audio[row, : len(clips[i])] = clips[i]
                ids = [index[p] for p in sequences[i] if p in index]
                labels[row, : len(ids)] = ids
            self.buckets[seconds] = dict(audio=audio, labels=labels,
                                         lengths=np.array([len(clips[i]) for i in members]),
                                         label_lengths=np.array([len(sequences[i])
                                                                 for i in members]))


class BucketIterator:
    """Random batches from one length bucket at a time; the state is the step count.

    With `augment_probability` > 0 each row is, with that probability, passed
    through a random chain of `audiolm_jax.audio.augment` transforms (drawn from
    the step's seed, so a resumed run sees the same audio)."""

    def __init__(self, data: Utterances, batch_size: int, seed: int,
                 augment_probability: float = 0.0):
        self.data, self.batch_size, self.seed, self.step = data, batch_size, seed, 0
        sizes = np.array([len(b["lengths"]) for b in data.buckets.values()], np.float64)
        self.keys, self.weights = list(data.buckets), sizes / sizes.sum()
        if not 0 <= augment_probability <= 1:
            raise ValueError(f"data.augment must be in [0, 1], got {augment_probability}")
        self.augment_probability = augment_probability

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rng = np.random.default_rng([self.seed, self.step])
        self.step += 1
        bucket = self.data.buckets[self.keys[rng.choice(len(self.keys), p=self.weights)]]
        rows = rng.integers(0, len(bucket["lengths"]), self.batch_size)
        n = bucket["labels"].shape[1]
        audio, lengths = bucket["audio"][rows], bucket["lengths"][rows]
        if self.augment_probability > 0:
            audio, lengths = audio.copy(), lengths.copy()
            augmenter = Augmenter(self.data.sample_rate, max_samples=audio.shape[1])
            for row in range(len(rows)):
                if rng.random() < self.augment_probability:
                    clip = augmenter(audio[row, : lengths[row]], rng)
                    audio[row] = 0.0
                    audio[row, : len(clip)] = clip
                    lengths[row] = len(clip)
        return {"audio": audio, "lengths": lengths,
                "labels": bucket["labels"][rows],
                "label_valid": np.arange(n)[None] < bucket["label_lengths"][rows][:, None]}

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])


def split_by_speaker(source: Any, num_held_out: int, seed: int):
    """(train records, held-out records, held-out speaker ids): the speech models' one
    speaker split (`data.sources.split_held_out_speakers`)."""
    train, held = split_held_out_speakers(source, num_held_out, seed=seed)
    train_records = [dict(train[i]) for i in range(len(train))]
    held_records = [dict(held[i]) for i in range(len(held))]
    return train_records, held_records, sorted({int(r["speaker"]) for r in held_records})


def folder_records(folders: str, voice: str = "en-us") -> list[dict]:
    """Records of extra training speech: every `<name>.wav` with a `<name>.txt` below the
    comma-separated `folders` (e.g. `benchmarks/flite_speech.py`'s flite voices), labelled
    with espeak's `voice` phones of the text."""
    from audiolm_jax.text.phonemizer import WORD_BOUNDARY, phonemize

    records = []
    for folder in filter(None, (f.strip() for f in folders.split(","))):
        wavs = sorted(Path(folder).rglob("*.wav"))
        if not wavs:
            raise FileNotFoundError(f"data.extra_folders: {folder} holds no .wav files")
        for wav in wavs:
            transcript = wav.with_suffix(".txt")
            if not transcript.is_file():
                raise FileNotFoundError(f"data.extra_folders: {wav} has no {transcript.name}")
            phones = [p for p in phonemize(transcript.read_text(encoding="utf-8").strip(),
                                           voice=voice) if p != WORD_BOUNDARY]
            records.append({"path": str(wav), "phonemes": phones})
    return records


def augmented_copies(clips: list[np.ndarray], sample_rate: int, seed: int = 1234
                     ) -> list[np.ndarray]:
    """Each clip through one random augmentation chain (fixed seed: the same copies at
    every evaluation), for the recognizer's robustness figure."""
    augmenter = Augmenter(sample_rate)
    return [augmenter(c, np.random.default_rng([seed, i])) for i, c in enumerate(clips)]


def make_eval_fn(model: pr.CTCRecognizer, held_out: Utterances, workdir: Path,
                 max_clips: int):
    """PER on held-out speakers' clean clips, and on augmented copies of them."""
    augmented = augmented_copies(held_out.clips[:max_clips], held_out.sample_rate)

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        recognizer = pr.PhonemeRecognizer(model, {"params": state.params}, held_out.phones)
        refs = held_out.references[:max_clips]
        hyps = [recognizer.recognize(c, held_out.sample_rate) for c in held_out.clips[:max_clips]]
        error = per(refs, hyps)
        error_augmented = per(refs, [recognizer.recognize(c, held_out.sample_rate)
                                     for c in augmented])
        if jax.process_index() == 0:
            lines = [f"# step {step}: PER {error:.3f} on {len(refs)} held-out utterances, "
                     f"{error_augmented:.3f} on augmented copies of them\n"]
            for r, h in list(zip(refs, hyps))[:5]:
                lines += [f"- ref: {' '.join(r)}", f"  hyp: {' '.join(h)}"]
            (workdir / "eval").mkdir(parents=True, exist_ok=True)
            write_text_atomic(workdir / "eval" / f"per_{step:06d}.md", "\n".join(lines) + "\n")
            logging.info("step %d: held-out PER %.3f (augmented copies: %.3f)", step, error,
                         error_augmented)
        return {"per": error, "per_augmented": error_augmented}
    return eval_fn


def train_and_evaluate(config: Any, workdir: str | Path
                       ) -> tuple[loop_lib.LoopResult, dict[str, float]]:
    """Runs (or resumes) fine-tuning; returns the loop result and the final held-out PERs
    (`per`: clean clips, `per_augmented`: augmented copies)."""
    if not config.encoder_path:
        raise ValueError("config.encoder_path is required: a w2v_bert export (train/w2v_bert.py "
                         "writes WORKDIR/export) or a Hugging Face w2v-BERT directory")
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    encoder, variables = load_w2v_bert(config.encoder_path)
    folder = build_corpus("speech", size=config.data.corpus_size, seed=config.data.corpus_seed,
                          root=config.data.corpus_root or None, progress=loop_config.progress)
    train_records, held_records, speakers = split_by_speaker(
        ManifestSource(folder), config.data.held_out_speakers, config.data.seed)
    logging.info("held-out speakers %s: %d utterances", speakers, len(held_records))
    rate = encoder.config.sample_rate
    train_records += folder_records(config.data.get("extra_folders", ""))
    train = Utterances(train_records, rate, desc="train utterances")
    held_out = Utterances(held_records, rate, phones=train.phones, desc="held-out utterances")
    layer = config.model.layer
    model = pr.CTCRecognizer(encoder.config, len(train.phones), layer)
    tx = make_optimizer(config.optimizer)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=pr.make_init_fn(model, tx, variables["params"]),
        train_step=pr.make_train_step(model, config.model.freeze_encoder_steps),
        data_iter=BucketIterator(train, config.data.batch_size, config.data.seed,
                                 config.data.get("augment", 0.0)),
        eval_fn=make_eval_fn(model, held_out, workdir, config.eval.max_clips))
    params = jax.device_get(result.state.params)
    recognizer = pr.PhonemeRecognizer(model, {"params": params}, train.phones)
    final = make_eval_fn(model, held_out, workdir, len(held_out.clips))(result.state,
                                                                        result.last_step)
    if jax.process_index() == 0:
        recognizer.save(workdir / "export", source=f"train/ctc.py step {result.last_step} "
                        f"from {config.encoder_path}")
        trainer_lib.write_loss_plot(workdir, {"train: CTC loss per phone": "train/loss"},
                                    ylabel="loss", title="phoneme recognizer fine-tuning")
    # Utterances are decoded up front (a bad file fails loudly), so nothing is skipped.
    trainer_lib.finish_run(workdir, result, BadFileReport())
    return result, final


def report(outcome: tuple[loop_lib.LoopResult, dict[str, float]], config: Any,
           workdir: Path) -> str:
    result, errors = outcome
    return (f"step {result.last_step}: held-out PER {errors['per']:.3f}, "
            f"{errors['per_augmented']:.3f} on augmented copies "
            f"({config.data.held_out_speakers} unseen speakers); recognizer in {workdir}/export")


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, report)
