r"""The README's demo: build the built-in corpora, then train the smallest model.

    python train/demo.py --workdir runs/demo [--steps 1000] [--corpus_size default]

Prints each corpus's size and build time, trains the masked log-mel transformer
(configs/mel_transformer/tiny.py) on the speech corpus with checkpoints, metrics
and plots in the work directory, and ends with where everything is. Running it
again resumes from the last checkpoint.
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
from configs.mel_transformer import tiny
from train.mel_transformer import train_and_evaluate

flags.DEFINE_string("workdir", "runs/demo", "Where checkpoints, metrics and plots go.")
flags.DEFINE_integer("steps", 1000, "Training steps.")
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
    config.optimizer.decay_steps = FLAGS.steps
    start = time.perf_counter()
    result = train_and_evaluate(config, FLAGS.workdir)
    workdir = Path(FLAGS.workdir)
    if result.history:
        last = result.history[-1]
        print(f"trained steps {result.start_step}..{result.last_step} in "
              f"{time.perf_counter() - start:.0f} s: L1 on hidden log-mel frames {last['loss']:.3f} "
              f"vs visible-mean baseline {last['baseline_loss']:.3f}")
    plots = sorted((workdir / "plots").glob("reconstruction_*.png"))
    print(f"checkpoints: {workdir / 'checkpoints'}\nmetrics:     {workdir / 'metrics.jsonl'} "
          f"(TensorBoard: {workdir / 'tensorboard'})")
    if plots:
        print(f"spectrograms: {plots[-1]}\nloss curve:  {workdir / 'plots' / 'loss.png'}")


if __name__ == "__main__":
    app.run(main)
