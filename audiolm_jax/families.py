"""The model families, each under one name.

A family's name is the same word everywhere: its `configs/<name>/` folder, its
`train/<name>.py` trainer, its `audiolm_jax/models/<name>/` package, the
`model_name` in its checkpoints and the model of its exports, and (where one
exists) its `python -m audiolm_jax.convert <name>` subcommand.
"""

from __future__ import annotations

# family -> what it is.
FAMILIES = {
    "codec": "SoundStream / EnCodec neural codec with residual VQ (adversarial training)",
    "w2v_bert": "w2v-BERT / BEST-RQ Conformer semantic encoder",
    "hubert": "HuBERT encoder (import only)",
    "bert": "BERT text encoder (import only; MuLan's text tower)",
    "mulan": "MuLan contrastive text-music embedder",
    "melody": "melody embedder (MusicLM's melody conditioning)",
    "ctc": "CTC phoneme recognizer over a semantic encoder",
    "mel_transformer": "masked log-mel transformer (the foundation's demo model)",
    "voicebox": "Voicebox flow-matching speech generation (audio and duration models)",
    "vocoder": "Vocos vocoder: log-mel (or EnCodec) frames -> waveform (adversarial training)",
    "bark": "Bark text to speech: semantic, coarse and fine token GPTs over EnCodec (import)",
    "f5tts": "F5-TTS flow-matching text to speech: a DiT over vocos log-mel (import, fine-tuning)",
    "musicgen": "MusicGen text to music: T5 conditioning, a delayed-codebook decoder over "
                "EnCodec 32 kHz (import, fine-tuning)",
}

# Names of earlier releases and the family each now goes by. Old checkpoints,
# exports and token files carry the old names; they still restore and load.
LEGACY_MODEL_NAMES = {
    "semantic": "w2v_bert",             # train/semantic.py's checkpoints
    "phonemes": "ctc",                  # train/phonemes.py's checkpoints
    "phoneme_recognizer": "ctc",        # the phoneme recognizer's exports
    "melody_embedder": "melody",        # the melody embedder's checkpoints, exports, rvq.npz
}


def canonical_model_name(name: str | None) -> str | None:
    """The current family name of `name` (itself unless it is a legacy name)."""
    return LEGACY_MODEL_NAMES.get(name, name)
