"""A phoneme vocabulary: special tokens first, then phonemes, saved as JSON."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from audiolm_jax.files import write_text_atomic
from audiolm_jax.text.phonemizer import WORD_BOUNDARY, strip_stress

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_FORMAT = "audiolm_jax.PhonemeVocab"


class PhonemeVocab:
    """Maps phoneme strings to int ids: <pad>=0, <bos>=1, <eos>=2, <unk>=3, then phonemes.

    Args:
      phonemes: the non-special tokens, in id order (duplicates and specials are
        skipped).
    """

    def __init__(self, phonemes: Iterable[str]):
        tokens = list(SPECIALS)
        seen = set(tokens)
        for ph in phonemes:
            if not isinstance(ph, str) or not ph:
                raise ValueError(f"phonemes must be non-empty strings, got {ph!r}")
            if ph not in seen:
                seen.add(ph)
                tokens.append(ph)
        self._tokens = tuple(tokens)
        self._ids = {t: i for i, t in enumerate(tokens)}

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens in id order, specials included."""
        return self._tokens

    @property
    def phonemes(self) -> tuple[str, ...]:
        """The non-special tokens in id order."""
        return self._tokens[len(SPECIALS):]

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhonemeVocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        return f"PhonemeVocab({len(self)} tokens)"

    def encode(self, phonemes: Sequence[str], add_bos: bool = False,
               add_eos: bool = False) -> np.ndarray:
        """Phoneme strings -> ids; unknown phonemes become <unk>.

        Returns:
          [len(phonemes) + add_bos + add_eos] int32 ids.
        """
        if isinstance(phonemes, str):
            raise TypeError("encode expects a list of phoneme strings, not one string")
        ids = [self._ids.get(p, self.unk_id) for p in phonemes]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: Iterable[int] | np.ndarray, skip_special: bool = False) -> list[str]:
        """Ids -> phoneme strings.

        Args:
          ids: [T] ints in [0, len(self)).
          skip_special: drop <pad>/<bos>/<eos> (not <unk>, which stands for a phoneme).
        """
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < len(self._tokens):
                raise ValueError(f"id {i} is outside the vocabulary [0, {len(self)})")
            if skip_special and i in (self.pad_id, self.bos_id, self.eos_id):
                continue
            out.append(self._tokens[i])
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Writes the tokens as JSON."""
        data = {"format": _FORMAT, "version": 1, "tokens": list(self._tokens)}
        write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PhonemeVocab:
        """Reads a vocabulary written by `save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        ok = isinstance(data, dict) and data.get("format") == _FORMAT
        tokens = data.get("tokens") if ok else None
        if not tokens or tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"{path} is not a saved PhonemeVocab")
        return cls(tokens[len(SPECIALS):])

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_count: int = 1,
              word_boundary: bool = True, keep_stress: bool = True) -> PhonemeVocab:
        """Collects the phonemes of `sequences`, sorted so the ids do not depend on order.

        Args:
          sequences: phoneme lists (e.g. from `phonemize` or corpus rows).
          min_count: phonemes seen fewer times map to <unk>.
          word_boundary: always include "|" (so `phonemize` output encodes fully).
          keep_stress: False strips stress marks before counting.
        """
        counts: Counter[str] = Counter()
        for seq in sequences:
            if isinstance(seq, str):
                raise TypeError("build expects phoneme lists, not strings")
            counts.update(seq if keep_stress else (strip_stress(p) for p in seq))
        kept = {p for p, c in counts.items() if c >= min_count and p and p not in SPECIALS}
        if word_boundary:
            kept.add(WORD_BOUNDARY)
        return cls(sorted(kept))

    @classmethod
    def from_corpus(cls, rows: Iterable[Mapping], key: str = "phonemes", **kwargs) -> PhonemeVocab:
        """Builds a vocabulary from manifest rows (e.g. `read_manifest` of the speech corpus).

        Args:
          rows: dicts with a phoneme list under `key`.
          **kwargs: passed to `build` (min_count, word_boundary, keep_stress).
        """
        return cls.build((row[key] for row in rows), **kwargs)
