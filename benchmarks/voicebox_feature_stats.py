r"""Measures the normalization statistics of Voicebox's features on its training speakers.

    python benchmarks/voicebox_feature_stats.py --utterances 256

The audio model's log-mel is normalized with statistics of *speech* frames
(frames whose aligned phone is not `<sil>` or `<pause>`), per mel bin: over
all frames, digital silence at the log floor would dominate the spread and
leave speech squeezed into a small part of the flow's unit range. Prints the
per-bin values as the tuples `configs/voicebox/common.py` holds, with what
each choice leaves speech at after normalization, and the duration model's
log(1 + frames) statistics over the same utterances (pauses included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

from audiolm_jax.data.aligned import build_vocab, speech_frames
from audiolm_jax.data.builder import source_from_config
from audiolm_jax.data.sources import split_held_out_speakers
from audiolm_jax.models.voicebox import train as vb_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=256)
    parser.add_argument("--config", default="tiny", help="a configs/voicebox module name")
    parser.add_argument("--min-std", type=float, default=1.0,
                        help="floor of the per-bin std: the top bins of band-limited speech "
                             "sit near the log floor, and a tiny std there would put silence "
                             "many units from the flow's noise")
    args = parser.parse_args()

    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from train.voicebox import make_pipeline

    config = importlib.import_module(f"configs.voicebox.{args.config}").get_config()
    config.data.max_frames = 640          # whole utterances: no crops, no pairs
    config.data.pair_probability = 0.0
    source = source_from_config(config.data, progress=False)
    vocab = build_vocab([source[i] for i in range(len(source))])
    train_source, _ = split_held_out_speakers(source, config.data.held_out_speakers,
                                              seed=config.data.seed)
    batch_size = 16
    pipeline = make_pipeline(config, train_source, vocab, batch_size=batch_size,
                             seed=config.data.seed, sharded=False)
    mel_fn = jax.jit(lambda audio: vb_train.mel_of(audio, config.mel))
    speech, all_valid, durations = [], [], []
    for _, batch in zip(range(max(args.utterances // batch_size, 1)), pipeline):
        mel = np.asarray(mel_fn(batch["audio"]))
        valid = batch["frame_valid"]
        is_speech = speech_frames(batch["frame_phones"], valid, vocab)
        speech.append(mel[is_speech])
        all_valid.append(mel[valid])
        durations.append(np.log1p(batch["durations"][batch["phone_valid"]]))
    speech, all_valid = np.concatenate(speech), np.concatenate(all_valid)
    durations = np.concatenate(durations)
    mean, std = speech.mean(0), np.maximum(speech.std(0), args.min_std)
    g_mean, g_std = all_valid.mean(), all_valid.std()
    print(f"{len(all_valid)} valid frames, {len(speech)} speech frames "
          f"({1 - len(speech) / len(all_valid):.1%} silence or pause)")
    print(f"all valid frames, one number:   mean {g_mean:.2f} std {g_std:.2f}")
    print(f"speech frames, one number:      mean {speech.mean():.2f} std {speech.std():.2f}")
    for name, m, s in (("global statistics", g_mean, g_std),
                       ("speech, one number", speech.mean(), speech.std()),
                       ("speech, per bin", mean, std)):
        z = (speech - m) / s
        print(f"  speech after {name:<20}: per-bin std {z.std(0).mean():.2f}, "
              f"floor at {((np.log(config.mel.log_floor) - m) / s).mean():+.2f}")
    print(f"log(1 + frames per phone): mean {durations.mean():.2f} std {durations.std():.2f}")
    print("SPEECH_MEL_MEAN = (" + ", ".join(f"{v:.2f}" for v in mean) + ")")
    print("SPEECH_MEL_STD = (" + ", ".join(f"{v:.2f}" for v in std) + ")")


if __name__ == "__main__":
    main()
