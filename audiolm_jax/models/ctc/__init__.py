"""The CTC phoneme recognizer: a semantic encoder plus a linear CTC head."""

from __future__ import annotations

from audiolm_jax.models.ctc.model import (
    BLANK,
    MODEL_NAME,
    CTCRecognizer,
    PhonemeRecognizer,
    ctc_loss,
    greedy_decode,
    normalize_phones,
)
from audiolm_jax.models.ctc.train import make_init_fn, make_train_step

# The committed recognizer (weights/ctc_tiny, trained with augmentation): the default
# judge of the TTS harness and the default aligner of Voicebox bundles.
DEFAULT_RECOGNIZER = "ctc_tiny"


def load(path):
    """A `PhonemeRecognizer` (`recognize(audio, sample_rate) -> phonemes`) from an export."""

    from audiolm_jax.models.ctc.model import PhonemeRecognizer

    return PhonemeRecognizer.load(path)


__all__ = [
    "make_init_fn",
    "make_train_step",
    "BLANK",
    "DEFAULT_RECOGNIZER",
    "CTCRecognizer",
    "MODEL_NAME",
    "PhonemeRecognizer",
    "ctc_loss",
    "greedy_decode",
    "load",
    "normalize_phones",
]
