r"""The README's demo: build the built-in corpora, then train the tiny codec.

    python train/demo.py --workdir runs/demo [--steps 400] [--corpus_size default]

Prints each corpus's size and build time, trains the tiny SoundStream/EnCodec
codec (configs/codec/tiny.py, reconstruction losses only: the adversarial
phase needs more steps than a demo has) on the speech corpus, with
checkpoints, metrics, held-out reconstructions (wav), spectrogram PNGs and a
bitrate table in the work directory, and ends with where everything is.
Running it again resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags

from audiolm_jax.data.corpora import CORPORA, build_corpus
from audiolm_jax.data.corpora.common import read_info
from configs.codec import tiny
from train.codec import train_and_evaluate

flags.DEFINE_string("workdir", "runs/demo", "Where checkpoints, metrics and plots go.")
flags.DEFINE_integer("steps", 400, "Training steps.")
flags.DEFINE_enum("corpus_size", "default", ["tiny", "default"], "Built-in corpus size.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    logging.getLogger().setLevel(logging.WARNING)
    for name in CORPORA:
        start = time.perf_counter()
        folder = build_corpus(name, size=FLAGS.corpus_size)
        info = read_info(folder)
        cached = time.perf_counter() - start < 0.5 * info["build_seconds"]
        print(f"corpus {name:6s}: {info['num_items']} clips, {info['total_seconds'] / 3600:.2f} h, "
              f"{info['bytes'] / 2**20:.0f} MiB, built in {info['build_seconds']:.0f} s "
              f"({'cached' if cached else 'just built'}) -> {folder}")
    config = tiny.get_config()
    config.data.corpus_size = FLAGS.corpus_size
    config.train.num_steps = FLAGS.steps
    config.train.eval_every = max(FLAGS.steps // 2, 1)
    config.train.save_every = max(FLAGS.steps // 2, 1)
    config.optimizer.decay_steps = FLAGS.steps
    config.loss.adversarial_start_step = FLAGS.steps  # reconstruction only
    start = time.perf_counter()
    result = train_and_evaluate(config, FLAGS.workdir)
    workdir = Path(FLAGS.workdir)
    if result.history:
        first, last = result.history[0], result.history[-1]
        print(f"trained steps {result.start_step}..{result.last_step} in "
              f"{time.perf_counter() - start:.0f} s: multi-scale mel loss {first['mel']:.3f} -> "
              f"{last['mel']:.3f}")
    tables = sorted(workdir.glob("eval/step_*/bitrate_table.md"))
    if tables:
        print(tables[-1].read_text())
    print(f"checkpoints:  {workdir / 'checkpoints'}\nmetrics:      {workdir / 'metrics.jsonl'} "
          f"(TensorBoard: {workdir / 'tensorboard'})\nexported:     {workdir / 'export'} "
          f"(python infer/codec.py roundtrip IN.wav OUT.wav --checkpoint {workdir})")
    if tables:
        step_dir = tables[-1].parent
        print(f"spectrograms: {step_dir / 'spectrograms.png'}\nreconstructions: "
              f"{step_dir}/*.wav\nloss curve:   {workdir / 'plots' / 'losses.png'}")


if __name__ == "__main__":
    app.run(main)
