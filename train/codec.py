r"""Trains the SoundStream / EnCodec codec adversarially.

    python train/codec.py --config configs/codec/tiny.py --workdir runs/codec_tiny \
        [--config.train.num_steps=2000 --config.data.corpus=music ...]

Writes to the work directory: `checkpoints/` (Orbax: generator, discriminator
and balancer state plus the data iterator), `metrics.jsonl`, `tensorboard/`,
`config.json`, and at every evaluation `eval/step_<step>/` with reference and
decoded wavs at the lowest and highest bandwidth, `spectrograms.png` (ground
truth vs decoded) and `bitrate_table.md` (mel distance and SI-SNR per
bandwidth on held-out clips). At the end: `plots/losses.png` and an exported
model in `export/` that `infer/codec.py --checkpoint WORKDIR` reads. Run it
again with the same work directory to resume.
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

from audiolm_jax.audio import spectral
from audiolm_jax.audio.io import save_audio
from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.pipeline import make_audio_pipeline
from audiolm_jax.data.sources import split_for_evaluation
from audiolm_jax.eval.audio_metrics import bitrate_table
from audiolm_jax.eval.plots import plot_spectrograms
from audiolm_jax.files import write_text_atomic
from audiolm_jax.models.codec import train as codec_gan
from audiolm_jax.models.codec.model import Codec
from audiolm_jax.training import loop as loop_lib
from audiolm_jax.training import mesh as mesh_lib
from audiolm_jax.training import trainer as trainer_lib
from audiolm_jax.training.export import save_exported


def make_pipeline(config: Any, source: Any, *, crop_seconds: float, batch_size: int,
                  seed: int, sharded: bool = True):
    """Training batches (each process its shard, `batch_size` split over processes), or
    with `sharded=False` the same whole batches on every process (eval)."""
    sample_rate = config.model.sample_rate
    if not sharded:
        return make_audio_pipeline(
            source, sample_rate=sample_rate, crop_samples=int(crop_seconds * sample_rate),
            batch_size=batch_size, seed=seed, channels=config.model.seanet.audio_channels,
            num_threads=config.data.num_threads, shard_index=0, shard_count=1)
    if batch_size % jax.process_count():
        raise ValueError(f"batch size {batch_size} is not divisible by {jax.process_count()} "
                         "processes")
    return make_audio_pipeline(
        source, sample_rate=sample_rate, crop_samples=int(crop_seconds * sample_rate),
        batch_size=batch_size // jax.process_count(), seed=seed,
        channels=config.model.seanet.audio_channels, num_threads=config.data.num_threads)


def _log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """[samples, channels] -> [frames, 80] log-mel of the channel mean, for plots."""
    return np.asarray(spectral.log_mel_spectrogram(audio.mean(axis=-1), sample_rate,
                                                   n_fft=1024, hop_length=256, n_mels=80))


def make_eval_fn(config: Any, codec: Codec, eval_source: Any, workdir: Path,
                 mesh: jax.sharding.Mesh):
    """Evaluates every bandwidth on fixed held-out clips; writes wavs, PNG and table."""
    cfg = codec.config
    pipeline = make_pipeline(config, eval_source, crop_seconds=config.eval.clip_seconds,
                             batch_size=config.eval.num_clips, seed=config.data.seed + 10_000,
                             sharded=False)
    clips = next(iter(pipeline))["audio"]
    device_clips = mesh_lib.replicate_host_arrays(clips, mesh, "the codec's held-out clips")
    eval_step = codec_gan.make_eval_step(codec)
    bandwidths = sorted(cfg.target_bandwidths)

    def eval_fn(state: Any, step: int) -> dict[str, float]:
        gen = state["generator"]
        rows, metrics, decoded = [], {}, {}
        for bandwidth in bandwidths:
            n_q = cfg.num_quantizers_for(bandwidth)
            out = jax.device_get(eval_step(gen.params, gen.model_state["codebook"], device_clips,
                                           n_q))
            mel, snr = float(np.mean(out["mel_distance"])), float(np.mean(out["si_snr"]))
            rows.append({"bandwidth": bandwidth, "num_codebooks": n_q, "mel_distance": mel,
                         "si_snr": snr})
            metrics[f"mel_distance_{bandwidth:g}kbps"] = mel
            metrics[f"si_snr_{bandwidth:g}kbps"] = snr
            decoded[bandwidth] = out["audio"]
        if jax.process_index() == 0:
            out_dir = workdir / "eval" / f"step_{step:06d}"
            reference = np.asarray(clips)
            for i in range(min(config.eval.num_wavs, reference.shape[0])):
                save_audio(out_dir / f"clip{i}_reference.wav", reference[i], cfg.sample_rate)
                for bandwidth in (bandwidths[0], bandwidths[-1]):
                    save_audio(out_dir / f"clip{i}_{bandwidth:g}kbps.wav", decoded[bandwidth][i],
                               cfg.sample_rate)
            panels = [("ground truth", _log_mel(reference[0], cfg.sample_rate))]
            for row in (rows[0], rows[-1]):
                panels.append((f"decoded at {row['bandwidth']:g} kbps ({row['num_codebooks']} "
                               f"codebooks): mel distance {row['mel_distance']:.3f}, SI-SNR "
                               f"{row['si_snr']:.1f} dB",
                               _log_mel(decoded[row["bandwidth"]][0], cfg.sample_rate)))
            plot_spectrograms(panels, out_dir / "spectrograms.png",
                              title=f"codec at step {step} (held-out clip, log-mel)",
                              frames_per_second=cfg.sample_rate / 256)
            table = bitrate_table(rows)
            write_text_atomic(out_dir / "bitrate_table.md",
                f"# step {step}: {len(reference)} held-out clips of "
                f"{config.eval.clip_seconds:g} s\n\n{table}\n")
            logging.info("step %d bitrate table:\n%s", step, table)
        return metrics

    return eval_fn


def train_and_evaluate(config: Any, workdir: str | Path,
                       data_iter: loop_lib.DataIterator | None = None,
                       on_step: Any = None) -> loop_lib.LoopResult:
    """Builds everything from `config` and runs (or resumes) training in `workdir`.

    Args:
      data_iter: replaces the configured pipeline (tests).
      on_step: forwarded to the loop.
    """
    workdir, mesh, rules, loop_config = trainer_lib.prepare_run(config, workdir)
    codec = codec_gan.build_codec(config)
    discriminator = codec_gan.build_discriminator(config)
    source = source_from_config(config.data, progress=loop_config.progress)
    train_source, eval_source = split_for_evaluation(source, config.data)
    pipeline = make_pipeline(config, train_source, crop_seconds=config.data.crop_seconds,
                             batch_size=config.data.batch_size, seed=config.data.seed)
    result = loop_lib.run(
        loop=loop_config, workdir=workdir, model_name=config.model_name, mesh=mesh, rules=rules,
        init_fn=codec_gan.make_init_fn(codec, discriminator, config),
        train_step=codec_gan.make_train_phases(codec, discriminator, config),
        data_iter=data_iter if data_iter is not None else iter(pipeline),
        eval_fn=make_eval_fn(config, codec, eval_source, workdir, mesh), on_step=on_step)
    if jax.process_index() == 0:
        gen = jax.device_get(result.state["generator"])
        save_exported(workdir / "export", "codec", codec.config.to_dict(),
                      {"params": gen.params, "codebook": gen.model_state["codebook"]},
                      source=f"train/codec.py step {result.last_step}")
        trainer_lib.write_loss_plot(
            workdir, {"train: multi-scale mel loss": "train/mel",
                      **{f"held-out mel distance at {b:g} kbps": f"eval/mel_distance_{b:g}kbps"
                         for b in config.model.target_bandwidths}},
            ylabel="loss / distance", title="codec training")
    trainer_lib.finish_run(workdir, result, pipeline.report)
    return result


def report(result: loop_lib.LoopResult, config: Any, workdir: Path) -> str:
    tables = sorted(workdir.glob("eval/step_*/bitrate_table.md"))
    table = tables[-1].read_text() + "\n" if tables else ""
    return f"{table}trained to step {result.last_step}; outputs in {workdir}"


if __name__ == "__main__":
    trainer_lib.main(train_and_evaluate, report)
