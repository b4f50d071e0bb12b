"""CTC phoneme recognizer, tiny, trained to hear more than clean espeak.

80 % of the training clips go through a random chain of speed, pitch, formant,
tilt, reverb, noise, band-limit and Griffin-Lim transforms
(`audiolm_jax/audio/augment.py`), and `data.extra_folders` adds other
synthesizers' speech (the recipe in weights/README.md adds flite's `rms`, `slt`
and `kal16` voices reading 400 corpus sentences each,
`benchmarks/flite_speech.py`; `awb` stays unheard, for evaluation). More
steps than `tiny.py`: the task is harder.
"""

from configs.ctc import tiny


def get_config():
    c = tiny.get_config()
    c.data.augment = 0.8
    c.optimizer.update(decay_steps=3000)
    c.train.update(num_steps=3000, save_every=250, eval_every=1000)
    return c
