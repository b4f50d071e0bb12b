"""The built-in corpora, generated locally and cached (see `common` for the layout).

    speech  espeak-ng speech, many speakers, text + phoneme alignments
    music   synthesized music with captions, notes and melody pairs
"""

from __future__ import annotations

import os
from pathlib import Path

CORPORA = ("speech", "music")


def build_corpus(name: str, size: str = "default", seed: int = 0,
                 root: str | os.PathLike | None = None, rebuild: bool = False,
                 progress: bool = True) -> Path:
    """Builds (or finds in the cache) a built-in corpus; returns its folder."""
    if name == "speech":
        from audiolm_jax.data.corpora.speech import build_speech_corpus as build
    elif name == "music":
        from audiolm_jax.data.corpora.music import build_music_corpus as build
    else:
        raise ValueError(f"unknown corpus {name!r}; expected one of {CORPORA}")
    return build(size=size, seed=seed, root=root, rebuild=rebuild, progress=progress)
