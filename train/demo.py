r"""The README's demo: build the built-in corpora, then train the tiny codec.

    python train/demo.py --workdir runs/demo [--steps 1000] [--corpus_size default]
    python train/demo.py --model mel_transformer --workdir runs/demo_mel

Prints each corpus's size and build time, then trains `--model` on the speech
corpus with checkpoints, metrics and plots in the work directory, and ends with
what it reached and where everything is. Running it again resumes from the
last checkpoint.

- `codec` (default): configs/codec/tiny.py, a causal EnCodec-style codec at
  1.5 / 3 / 6 kbps. Every evaluation writes held-out reconstructions (wav), a
  ground-truth-vs-decoded spectrogram PNG and a table of mel distance and
  SI-SNR per bitrate; the last table is printed.
- `mel_transformer`: configs/mel_transformer/tiny.py, the masked log-mel
  transformer (the smallest model; the foundation's demo).
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

flags.DEFINE_enum("model", "codec", ["codec", "mel_transformer"], "What to train.")
flags.DEFINE_string("workdir", "runs/demo", "Where checkpoints, metrics and plots go.")
flags.DEFINE_integer("steps", None, "Training steps (default: the tiny config's).")
flags.DEFINE_enum("corpus_size", "default", ["tiny", "default"], "Built-in corpus size.")
FLAGS = flags.FLAGS


def _build_corpora(size: str) -> None:
    for name in CORPORA:
        start = time.perf_counter()
        folder = build_corpus(name, size=size)
        info = read_info(folder)
        cached = time.perf_counter() - start < 0.5 * info["build_seconds"]
        print(f"corpus {name:6s}: {info['num_items']} clips, {info['total_seconds'] / 3600:.2f} h, "
              f"{info['bytes'] / 2**20:.0f} MiB, built in {info['build_seconds']:.0f} s "
              f"({'cached' if cached else 'just built'}) -> {folder}")


def _set_steps(config, steps: int) -> None:
    """Shortens or lengthens a run, keeping the schedules' shape."""
    old = config.train.num_steps
    config.train.num_steps = steps
    for opt in ("optimizer", "discriminator_optimizer"):
        if opt in config and config[opt].schedule != "constant":
            config[opt].decay_steps = steps
    if "loss" in config and "adversarial_start_step" in config.loss:
        config.loss.adversarial_start_step = round(config.loss.adversarial_start_step * steps / old)
    config.train.eval_every = max(1, min(config.train.eval_every, steps // 4))
    config.train.save_every = config.train.eval_every


def _train_codec(workdir: Path) -> None:
    from configs.codec import tiny
    from train.codec import train_and_evaluate

    config = tiny.get_config()
    config.data.corpus_size = FLAGS.corpus_size
    if FLAGS.steps is not None:
        _set_steps(config, FLAGS.steps)
    start = time.perf_counter()
    result = train_and_evaluate(config, workdir)
    if result.history:
        print(f"trained steps {result.start_step}..{result.last_step} in "
              f"{time.perf_counter() - start:.0f} s")
    tables = sorted(workdir.glob("eval/step_*/bitrate_table.md"))
    if tables:
        print(tables[-1].read_text())
        print(f"reconstructions and spectrograms: {tables[-1].parent}")
    print(f"checkpoints: {workdir / 'checkpoints'}\nexport:      {workdir / 'export'} "
          f"(infer/codec.py --checkpoint)\nmetrics:     {workdir / 'metrics.jsonl'} "
          f"(TensorBoard: {workdir / 'tensorboard'})\nloss curve:  {workdir / 'plots' / 'losses.png'}")


def _train_mel_transformer(workdir: Path) -> None:
    from configs.mel_transformer import tiny
    from train.mel_transformer import train_and_evaluate

    config = tiny.get_config()
    config.data.corpus_size = FLAGS.corpus_size
    _set_steps(config, FLAGS.steps or 1000)
    start = time.perf_counter()
    result = train_and_evaluate(config, workdir)
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


def main(argv: list[str]) -> None:
    del argv
    logging.getLogger().setLevel(logging.WARNING)
    if FLAGS.steps is not None and FLAGS.steps < 1:
        raise app.UsageError(f"--steps must be positive, got {FLAGS.steps}")
    _build_corpora(FLAGS.corpus_size)
    workdir = Path(FLAGS.workdir)
    if FLAGS.model == "codec":
        _train_codec(workdir)
    else:
        _train_mel_transformer(workdir)


if __name__ == "__main__":
    app.run(main)
