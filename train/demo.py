r"""The README's demo: text to speech in held-out voices, or training a small model.

    python train/demo.py --model tts --workdir runs/demo_tts                 # committed weights
    python train/demo.py --model tts --workdir runs/demo_tts --from_scratch  # train it all first
    python train/demo.py --workdir runs/demo [--steps 1000] [--corpus_size default]
    python train/demo.py --model mel_transformer --workdir runs/demo_mel

- `tts`: loads the Voicebox bundle committed under `weights/voicebox_tiny`
  (audio and duration models; the committed vocoder and the recognizer that
  aligns prompts), says `--num_sentences` hand-written sentences no model here
  heard (`benchmarks/data/tts_sentences.txt`) in `--num_voices` voices of the
  built-in corpus's held-out speakers, and writes `tts/sentence<n>_<voice>.wav`
  and one spectrogram PNG per sentence (each prompt, then the sentence in its
  voice). Then `benchmarks/tts_eval.py` scores the bundle on the held-out
  speakers' own sentences (cross-sentence prompts) beside the calibration rows:
  `table.md`. `--from_scratch` first runs `TTS_RECIPE` (every model the bundle
  needs, hours on a 2-core CPU; each step resumes) into the work directory and
  speaks with what it trained.
- `codec` (default): configs/codec/tiny.py, a causal EnCodec-style codec at
  1.5 / 3 / 6 kbps. Every evaluation writes held-out reconstructions (wav), a
  ground-truth-vs-decoded spectrogram PNG and a table of mel distance and
  SI-SNR per bitrate; the last table is printed.
- `mel_transformer`: configs/mel_transformer/tiny.py, the masked log-mel
  transformer (the smallest model; the foundation's demo).

The trainers print each corpus's size and build time, then train `--model` on
the speech corpus with checkpoints, metrics and plots in the work directory,
and end with what they reached and where everything is. Running again resumes.
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

flags.DEFINE_enum("model", "codec", ["tts", "codec", "mel_transformer"],
                  "tts: speak with Voicebox; codec / mel_transformer: train that model.")
flags.DEFINE_bool("from_scratch", False, "tts: run the whole recipe first instead of loading "
                  "the committed weights.")
flags.DEFINE_string("weights", "voicebox_tiny", "tts: the bundle (committed name or folder).")
flags.DEFINE_integer("num_sentences", 5, "tts: sentences to say in each voice.")
flags.DEFINE_integer("num_voices", 3, "tts: held-out voices to say them in.")
flags.DEFINE_integer("eval_per_speaker", 4, "tts: held-out utterances per speaker in the "
                     "evaluation table (0: no table).")
flags.DEFINE_string("workdir", "runs/demo", "Where checkpoints, metrics and plots go.")
flags.DEFINE_integer("steps", None, "Training steps (default: the tiny config's).")
flags.DEFINE_enum("corpus_size", "default", ["tiny", "default"], "Built-in corpus size.")
FLAGS = flags.FLAGS


def _build_corpora(size: str, names: tuple[str, ...] = tuple(CORPORA)) -> None:
    for name in names:
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


# The recipe behind `weights/` (each entry one command of weights/README.md, shortened
# where noted there): (name, script, config, overrides). `{w}` is the work directory.
TTS_RECIPE = (
    ("w2v_bert", "train/w2v_bert.py", "configs/w2v_bert/tiny.py",
     {"train.num_steps": 2000, "optimizer.decay_steps": 2000, "train.eval_every": 1000}),
    ("ctc", "train/ctc.py", "configs/ctc/tiny_augmented.py",
     {"encoder_path": "{w}/w2v_bert/export"}),
    ("vocoder", "train/vocoder.py", "configs/vocoder/tiny.py", {}),
    ("duration", "train/voicebox.py", "configs/voicebox/tiny_duration.py", {}),
    ("audio", "train/voicebox.py", "configs/voicebox/tiny.py",
     {"export.duration_model": "{w}/duration/export", "export.vocoder": "{w}/vocoder/export",
      "export.recognizer": "{w}/ctc/export", "eval.vocoder": "{w}/vocoder/export"}),
)


def _run_tts_recipe(workdir: Path) -> Path:
    """Runs every `TTS_RECIPE` command (a finished one only re-exports) and returns the
    audio model's work directory, which its trainer made a bundle."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    for name, script, config, overrides in TTS_RECIPE:
        command = [sys.executable, script, f"--config={config}", f"--workdir={workdir / name}",
                   "--config.train.progress=False"]
        command += [f"--config.{k}={str(v).format(w=workdir.resolve())}"
                    for k, v in overrides.items()]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=root)
    return workdir / "audio"


def _speak(workdir: Path) -> None:
    from audiolm_jax.eval import tts_demo, tts_harness
    from audiolm_jax.files import resolve_weights
    from audiolm_jax.models.voicebox.inference import load
    from benchmarks import tts_eval

    if FLAGS.from_scratch:
        bundle = _run_tts_recipe(workdir)
    else:
        try:
            bundle = resolve_weights(FLAGS.weights)
        except FileNotFoundError as e:
            raise app.UsageError(f"{e}. Train the models with --from_scratch, or name a "
                                 "bundle with --weights") from None
    start = time.perf_counter()
    voice = load(bundle)
    # Utterances up to 4.5 s: prompt and target share the tiny model's 5.5 s context.
    eval_root = tts_harness.write_builtin_eval_set(workdir / "eval_set",
                                                   per_speaker=max(FLAGS.eval_per_speaker, 2),
                                                   max_seconds=4.5)
    speakers = tts_harness.EvalSet.read(eval_root).speakers
    prompts = [utterances[0] for utterances in list(speakers.values())[:FLAGS.num_voices]]
    sentences = tts_demo.read_sentences()[:FLAGS.num_sentences]
    sampling = dict(num_steps=8, method="midpoint", guidance=0.7)   # 32 network passes
    print(f"Voicebox bundle {bundle} loaded in {time.perf_counter() - start:.1f} s; saying "
          f"{len(sentences)} unseen sentences in the voices of held-out speakers "
          f"{', '.join(p.speaker for p in prompts)} (8 midpoint steps, guidance 0.7)",
          flush=True)
    spoken = tts_demo.speak_sentences(voice, prompts, sentences, workdir / "tts", **sampling)
    for item in spoken:
        print(f"  {item.text!r} -> {item.picture}")
    print(tts_demo.summary_line(spoken), flush=True)
    if FLAGS.eval_per_speaker:
        tts_eval.main(["--eval-set", str(eval_root), "--out", str(workdir / "table.md"),
                       "--system", f"voicebox=voicebox:{bundle}:steps=8,guidance=0.7",
                       "--no-progress"])
    print(f"wavs and spectrograms: {workdir / 'tts'}")


def main(argv: list[str]) -> None:
    del argv
    logging.getLogger().setLevel(logging.WARNING)
    if FLAGS.steps is not None and FLAGS.steps < 1:
        raise app.UsageError(f"--steps must be positive, got {FLAGS.steps}")
    workdir = Path(FLAGS.workdir)
    if FLAGS.model == "tts":
        _build_corpora(FLAGS.corpus_size, names=("speech",))
        _speak(workdir)
        return
    _build_corpora(FLAGS.corpus_size)
    if FLAGS.model == "codec":
        _train_codec(workdir)
    else:
        _train_mel_transformer(workdir)


if __name__ == "__main__":
    app.run(main)
