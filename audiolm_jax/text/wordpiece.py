"""WordPiece tokenization for the BERT text encoder (`audiolm_jax.models.bert`).

A thin wrapper over Hugging Face's `tokenizers` library (Rust; no
`transformers` needed) that gives what `Bert` consumes: fixed-length int32 ids
and a bool mask, with [CLS] ... [SEP] added and over-long texts truncated the
way `BertTokenizer(..., truncation=True)` does it ([SEP] kept last).

    tok = WordPieceTokenizer.from_hf_dir("all-MiniLM-L6-v2/")   # tokenizer.json or vocab.txt
    batch = tok.encode(["warm analog synth pads", "a solo cello"], max_length=64)
    hidden = Bert(config).apply(variables, batch.ids, batch.mask)

`WordPieceTokenizer.train` builds a lowercase BERT WordPiece from scratch (for
tests and small experiments). `check_compatible` refuses a tokenizer whose
ids the checkpoint cannot embed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from audiolm_jax.files import atomic_path
from audiolm_jax.text.tokenizer_json import read_tokenizer_json, tokenizers_module
from audiolm_jax.training.checkpointing import CheckpointMismatchError

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizedText(NamedTuple):
    """A batch of texts as `Bert` inputs.

    Attributes:
      ids: [n, max_length] int32, [CLS] text [SEP] then `pad_id`.
      mask: [n, max_length] bool, True on real tokens ([CLS] and [SEP] included).
      truncated: indices of the texts that were cut to max_length tokens.
    """

    ids: np.ndarray
    mask: np.ndarray
    truncated: list[int]


def vocabulary_hash(vocab: dict[str, int]) -> str:
    """16 hex digits of SHA-256 over a vocabulary's sorted (token, id) pairs."""
    digest = hashlib.sha256()
    for token, index in sorted(vocab.items(), key=lambda item: (item[1], item[0])):
        digest.update(f"{index}\t{token}\n".encode())
    return digest.hexdigest()[:16]


class WordPieceTokenizer:
    """A `tokenizers.Tokenizer` that wraps each text in [CLS] ... [SEP] (BERT's template).

    Attributes:
      source: where it was read from (for error messages).
    """

    def __init__(self, tokenizer: Any, source: str = "tokenizer"):
        """Wraps a `tokenizers.Tokenizer`.

        Raises:
          ValueError: when it has no pad token, or does not put exactly one
            special token before and after a text (no BERT post-processor).
        """
        tokenizers = tokenizers_module("WordPiece tokenization")
        self.source = source
        self._tokenizer = tokenizer         # as given; what `save` writes
        # Our own copy pads and truncates nothing: `encode` does both, so a
        # tokenizer.json saved with padding to 128 (sentence-transformers) or
        # truncation settings behaves the same as one without.
        self._encoder = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        self._encoder.no_padding()
        self._encoder.no_truncation()
        padding = tokenizer.padding
        pad_id = padding["pad_id"] if padding else tokenizer.token_to_id("[PAD]")
        if pad_id is None:
            raise ValueError(f"{source}: the tokenizer has no [PAD] token and no padding "
                             f"settings, so it has no pad id")
        self._pad_id = int(pad_id)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        # The number of ids an embedding table must hold: ids need not be dense.
        self._vocab_size = max(vocab.values()) + 1 if vocab else 0
        self._vocab_hash = vocabulary_hash(vocab)
        probe = self._encoder.encode("a")
        special = probe.special_tokens_mask
        if len(special) < 3 or special[0] != 1 or special[-1] != 1 or any(special[1:-1]):
            raise ValueError(f"{source}: the tokenizer does not wrap a text in one special "
                             f"token on each side (got {probe.tokens} for 'a'); BERT needs a "
                             f"'[CLS] $A [SEP]' post_processor")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        """From a `tokenizer.json` (as `tokenizers` / `transformers` save it)."""
        return cls(read_tokenizer_json(path, "WordPiece tokenization"), source=str(path))

    @classmethod
    def from_hf_dir(cls, hf_dir: str | os.PathLike) -> WordPieceTokenizer:
        """From a Hugging Face model directory: `tokenizer.json`, else `vocab.txt`.

        With only `vocab.txt`, a BERT WordPiece is built around it; it
        lowercases unless `tokenizer_config.json` says `do_lower_case: false`
        (and follows its `strip_accents` / `tokenize_chinese_chars`).

        Raises:
          FileNotFoundError: when the directory has neither file.
        """
        hf_dir = Path(hf_dir)
        if (hf_dir / TOKENIZER_FILE).is_file():
            return cls.from_file(hf_dir / TOKENIZER_FILE)
        vocab = hf_dir / VOCAB_FILE
        if not vocab.is_file():
            what = "does not exist" if not hf_dir.is_dir() else (
                f"has neither {TOKENIZER_FILE} nor {VOCAB_FILE}")
            raise FileNotFoundError(f"no WordPiece tokenizer in {hf_dir}: it {what}")
        options: dict[str, Any] = {}
        config_file = hf_dir / TOKENIZER_CONFIG_FILE
        if config_file.is_file():
            try:
                options = json.loads(config_file.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{config_file} is not valid JSON: {e}") from e
        from tokenizers.implementations import BertWordPieceTokenizer

        built = BertWordPieceTokenizer(
            str(vocab), lowercase=bool(options.get("do_lower_case", True)),
            strip_accents=options.get("strip_accents"),
            handle_chinese_chars=bool(options.get("tokenize_chinese_chars", True)))
        return cls(built._tokenizer, source=str(vocab))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int,
              min_frequency: int = 1) -> WordPieceTokenizer:
        """A lowercase BERT WordPiece learnt from `texts`.

        Special tokens come first: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
        """
        tk = tokenizers_module("WordPiece tokenization")
        tokenizer = tk.Tokenizer(tk.models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = tk.decoders.WordPiece()
        trainer = tk.trainers.WordPieceTrainer(vocab_size=vocab_size,
                                               min_frequency=min_frequency, show_progress=False,
                                               special_tokens=list(SPECIAL_TOKENS))
        tokenizer.train_from_iterator(texts, trainer)
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = tk.processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return cls(tokenizer, source="trained WordPiece")

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the tokenizer as a `tokenizer.json` (readable by `from_file` and HF)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self._tokenizer.save(str(tmp))
        return path

    # ------------------------------------------------------------------ properties

    @property
    def vocab_size(self) -> int:
        """The number of ids (highest id + 1, added tokens included)."""
        return self._vocab_size

    @property
    def vocab_hash(self) -> str:
        """16 hex digits of SHA-256 over the sorted (token, id) pairs: two vocabularies
        of the same size but other tokens (or ids) differ."""
        return self._vocab_hash

    @property
    def pad_id(self) -> int:
        return self._pad_id

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: Sequence[str], max_length: int,
               add_special_tokens: bool = True) -> TokenizedText:
        """Tokenizes a batch to fixed length.

        Args:
          texts: non-empty sequence of non-blank strings.
          max_length: tokens per row, [CLS] and [SEP] included. A text that
            needs more keeps its first max_length - 1 tokens and [SEP] (HF's
            truncation=True); one warning reports how many were cut.
          add_special_tokens: False gives the bare word pieces (Bark reads its
            text so), an over-long text keeping its first max_length.

        Returns:
          `TokenizedText` (ids int32 and mask bool, both [len(texts), max_length]).

        Raises:
          ValueError: for an empty batch, a bare string, a non-str element or
            a blank text (naming its index), or max_length < 2.
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
            if not text.strip():
                raise ValueError(f"encode: text {i} is empty or whitespace only ({text!r:.40})")
        if max_length < (2 if add_special_tokens else 1):
            raise ValueError(f"encode: max_length {max_length} cannot hold [CLS] and [SEP]")
        encodings = self._encoder.encode_batch(texts, add_special_tokens=add_special_tokens)
        ids = np.full((len(texts), max_length), self._pad_id, np.int32)
        mask = np.zeros((len(texts), max_length), bool)
        truncated = []
        for i, encoding in enumerate(encodings):
            row = encoding.ids
            if len(row) > max_length:
                truncated.append(i)
                row = (row[: max_length - 1] + row[-1:] if add_special_tokens   # [SEP] last
                       else row[:max_length])
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        if truncated:
            first = truncated[0]
            logging.warning("%d of %d texts were truncated to max_length=%d tokens (the first "
                            "is text %d, %d tokens)", len(truncated), len(texts), max_length,
                            first, len(encodings[first].ids))
        return TokenizedText(ids, mask, truncated)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text (special tokens dropped)."""
        return self._tokenizer.decode([int(i) for i in ids])

    # ------------------------------------------------------------------ checks

    def check_compatible(self, config: Any, source: str) -> None:
        """Refuses a tokenizer that does not match a text checkpoint.

        Args:
          config: the checkpoint's `BertConfig` (anything with `vocab_size`
            and `pad_token_id`).
          source: the checkpoint's path, for the message.

        Raises:
          CheckpointMismatchError: when the tokenizer has ids the checkpoint's
            embedding table lacks, pads with another id, or (when the config
            records one: exports written by `convert_bert` and the MuLan trainer
            do) has another vocabulary than the one the weights were trained with.
        """
        want = getattr(config, "vocab_hash", None)
        if want is not None and want != self.vocab_hash:
            raise CheckpointMismatchError(
                f"tokenizer {self.source} has vocabulary hash {self.vocab_hash} but the text "
                f"checkpoint {source} was trained with vocabulary {want}: same size or not, "
                "its tokens map to other ids")
        if self.vocab_size > config.vocab_size:
            raise CheckpointMismatchError(
                f"tokenizer {self.source} has {self.vocab_size} ids but the text checkpoint "
                f"{source} embeds only vocab_size={config.vocab_size}: the tokenizer does not "
                f"match the text checkpoint")
        pad = getattr(config, "pad_token_id", None)
        if pad is not None and self.pad_id != pad:
            raise CheckpointMismatchError(
                f"tokenizer {self.source} pads with id {self.pad_id} but the text checkpoint "
                f"{source} has pad_token_id={pad}: the tokenizer does not match the text "
                f"checkpoint")

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, "
                f"pad_id={self.pad_id})")
