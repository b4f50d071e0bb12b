"""What the `tokenizer.json` readers share (BERT's WordPiece, T5's Unigram)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def tokenizers_module(what: str) -> Any:
    """The `tokenizers` package, or an ImportError saying `what` needs it."""
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs the `tokenizers` package (pip install tokenizers)") from e
    return tokenizers


def read_tokenizer_json(path: str | os.PathLike, what: str) -> Any:
    """A `tokenizers.Tokenizer` from a `tokenizer.json` (as `tokenizers` / `transformers`
    save it).

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a tokenizers JSON file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    try:
        return tokenizers_module(what).Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own exception type
        raise ValueError(f"cannot read {path} as a tokenizers JSON file: {e}") from e
