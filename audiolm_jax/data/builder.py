"""Data sources from the `data` block of a config."""

from __future__ import annotations

from typing import Any

from audiolm_jax.data.sources import AudioFolderSource, ManifestSource, TfdsSource

SOURCES = ("corpus", "folder", "manifest", "tfds")


def source_from_config(data: Any, progress: bool = True) -> Any:
    """The random-access source that `data.source` names.

    corpus: a built-in corpus (`data.corpus`, `data.corpus_size`, `data.corpus_seed`,
            `data.corpus_root`), built on first use.
    folder: every audio file under `data.folder`, sidecar `.txt` as text.
    manifest: the rows of `data.folder/manifest.jsonl` with every field kept (e.g. the
            phone alignments of `python -m audiolm_jax.data.align_manifest`).
    tfds:   `data.tfds_name` / `data.tfds_split` prepared under `data.tfds_data_dir`.
    """
    kind = data.source
    if kind == "corpus":
        from audiolm_jax.data.corpora import build_corpus

        folder = build_corpus(data.corpus, size=data.corpus_size, seed=data.corpus_seed,
                              root=data.corpus_root or None, progress=progress)
        return ManifestSource(folder)
    if kind == "folder":
        if not data.folder:
            raise ValueError("data.source='folder' needs --config.data.folder=PATH")
        return AudioFolderSource(data.folder)
    if kind == "manifest":
        if not data.folder:
            raise ValueError("data.source='manifest' needs --config.data.folder=DIR "
                             "(the folder holding manifest.jsonl)")
        return ManifestSource(data.folder)
    if kind == "tfds":
        if not data.tfds_name:
            raise ValueError("data.source='tfds' needs --config.data.tfds_name=NAME")
        return TfdsSource(data.tfds_name, data.tfds_split, data.tfds_data_dir or None,
                          sample_rate=data.tfds_sample_rate)
    raise ValueError(f"data.source={kind!r}: expected one of {SOURCES}")
