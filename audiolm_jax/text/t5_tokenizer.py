"""T5's SentencePiece tokenization (for `audiolm_jax.models.t5.T5Encoder`), from `tokenizer.json`.

A thin wrapper over Hugging Face's `tokenizers` library (Rust; neither
`transformers` nor `sentencepiece` needed) that gives what `T5Encoder` consumes,
equal to `transformers.T5TokenizerFast(tokenizer_file=...)(texts, padding="longest")`
(and, with `max_length`, to `truncation=True, max_length=max_length`):

    tok = T5Tokenizer.from_dir("musicgen-small/")        # reads its tokenizer.json
    ids, mask, truncated = tok.encode(["warm analog synth pads", "a solo cello"])
    hidden = T5Encoder(config).apply({"params": params}, ids, mask)

Each row is the text's pieces, then `</s>` (appended by the tokenizer.json's
post-processor), then pad id 0 up to the longest row. Only `tokenizer.json` is
read: a checkpoint that ships only `spiece.model` needs it written once, on a
machine with transformers and sentencepiece (see `from_dir`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from audiolm_jax.text.tokenizer_json import read_tokenizer_json, tokenizers_module
from audiolm_jax.training.checkpointing import CheckpointMismatchError

TOKENIZER_FILE = "tokenizer.json"
SPIECE_FILE = "spiece.model"
PAD_TOKEN, EOS_TOKEN = "<pad>", "</s>"


class T5Encoding(NamedTuple):
    """A batch of texts as `T5Encoder` inputs (unpacks as `ids, mask, truncated`).

    Attributes:
      ids: [n, length] int32: pieces, `</s>`, then pad id; length is the longest row.
      mask: [n, length] int32, 1 on real tokens (`</s>` included), 0 on padding.
      truncated: per text, whether it was cut to max_length tokens.
    """

    ids: np.ndarray
    mask: np.ndarray
    truncated: list[bool]


class T5Tokenizer:
    """A `tokenizers.Tokenizer` whose post-processor appends `</s>` to each text (T5's template).

    Attributes:
      source: where it was read from (for error messages).
    """

    def __init__(self, tokenizer: Any, source: str = "tokenizer"):
        """Wraps a `tokenizers.Tokenizer`.

        Raises:
          ValueError: when it has no `<pad>` token, or its post-processor does not
            append exactly one special token (`</s>`) after a text and none before.
        """
        tokenizers = tokenizers_module("T5 tokenization")
        self.source = source
        # Our own copy pads and truncates nothing: `encode` does both, so a
        # tokenizer.json saved with padding or truncation settings behaves the same.
        self._encoder = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        self._encoder.no_padding()
        self._encoder.no_truncation()
        pad_id = self._encoder.token_to_id(PAD_TOKEN)
        if pad_id is None:
            raise ValueError(f"{source}: the tokenizer has no {PAD_TOKEN} token, so no pad id")
        self._pad_id = int(pad_id)
        probe = self._encoder.encode("a")
        special = probe.special_tokens_mask
        if len(special) < 2 or special[-1] != 1 or any(special[:-1]) or (
                probe.tokens[-1] != EOS_TOKEN):
            raise ValueError(f"{source}: the tokenizer does not append one {EOS_TOKEN} to a text "
                             f"(got {probe.tokens} for 'a'); T5 needs a '$A {EOS_TOKEN}' "
                             f"post_processor")
        self._eos_id = int(probe.ids[-1])
        vocab = self._encoder.get_vocab(with_added_tokens=True)
        # The number of ids an embedding table must hold: ids need not be dense.
        self._vocab_size = max(vocab.values()) + 1

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> T5Tokenizer:
        """From a `tokenizer.json` (as `tokenizers` / `transformers` save it)."""
        return cls(read_tokenizer_json(path, "T5 tokenization"), source=str(path))

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> T5Tokenizer:
        """From a Hugging Face model directory's `tokenizer.json` (or that file itself).

        Raises:
          FileNotFoundError: when there is no tokenizer.json; with a spiece.model
            only, the message says how to write tokenizer.json from it.
        """
        path = Path(path)
        if path.is_file():
            return cls.from_file(path)
        if (path / TOKENIZER_FILE).is_file():
            return cls.from_file(path / TOKENIZER_FILE)
        if not path.is_dir():
            raise FileNotFoundError(f"T5 tokenizer directory {path} does not exist")
        found = sorted(p.name for p in path.iterdir())
        what = (f"only {SPIECE_FILE} (a SentencePiece model, not read here)"
                if SPIECE_FILE in found else f"no tokenizer (found: {', '.join(found) or 'nothing'})")
        raise FileNotFoundError(
            f"{path} has no {TOKENIZER_FILE}, {what}. Save one once, on a machine with "
            f"transformers and sentencepiece: "
            f"AutoTokenizer.from_pretrained({str(path)!r}).save_pretrained({str(path)!r})")

    # ------------------------------------------------------------------ properties

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def vocab_size(self) -> int:
        """The number of ids (highest id + 1, added tokens included)."""
        return self._vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self._encoder.token_to_id(token)

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> T5Encoding:
        """Tokenizes a batch, padded to its longest row.

        Args:
          texts: a non-empty sequence of strings. An empty string encodes as `</s>`
            alone (refusing empty captions is the caller's choice).
          max_length: at most this many tokens per row, `</s>` included: a longer
            text keeps its first max_length - 1 pieces and `</s>` (transformers'
            `truncation=True`), and is flagged in `truncated`. None: no limit.

        Returns:
          `T5Encoding(ids, mask, truncated)`, ids and mask [len(texts), longest] int32.

        Raises:
          ValueError: for an empty batch, a bare string, a non-str element (naming
            its index), or max_length < 1.
        """
        if isinstance(texts, str | bytes):
            raise ValueError("encode takes a sequence of texts, not one string; wrap it in a list")
        texts = list(texts)
        if not texts:
            raise ValueError("encode: no texts to tokenize (empty list)")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"encode: text {i} is a {type(text).__name__}, not a str: "
                                 f"{text!r:.80}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"encode: max_length {max_length} cannot hold {EOS_TOKEN}")
        rows, truncated = [], []
        for encoding in self._encoder.encode_batch(texts):
            row = encoding.ids
            cut = max_length is not None and len(row) > max_length
            if cut:
                # The pieces are cut, not the template: </s> stays last.
                row = row[: max_length - 1] + row[-1:]
            rows.append(row)
            truncated.append(cut)
        length = max(len(row) for row in rows)
        ids = np.full((len(rows), length), self._pad_id, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return T5Encoding(ids, mask, truncated)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (special tokens dropped)."""
        return self._encoder.decode([int(i) for i in ids])

    # ------------------------------------------------------------------ checks

    def check_vocab_size(self, vocab_size: int, source: str) -> None:
        """Refuses a tokenizer with ids an embedding table of `vocab_size` rows lacks
        (T5's table is usually larger than its tokenizer: 32128 rows for 32100 ids).

        Raises:
          CheckpointMismatchError: naming both sizes and `source` (the checkpoint).
        """
        if self.vocab_size > vocab_size:
            raise CheckpointMismatchError(
                f"tokenizer {self.source} has {self.vocab_size} ids but the T5 checkpoint "
                f"{source} embeds only vocab_size={vocab_size}: the tokenizer does not match "
                f"the text checkpoint")

    def __repr__(self) -> str:
        return (f"T5Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, "
                f"pad_id={self.pad_id}, eos_id={self.eos_id})")
