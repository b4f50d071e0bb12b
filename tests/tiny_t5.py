"""A tiny T5-like `tokenizer.json` built offline (no hub), for the T5 and MusicGen tests."""

from __future__ import annotations

from pathlib import Path


def write_tiny_tokenizer(directory: Path) -> Path:
    """Writes `directory/tokenizer.json`: Unigram pieces (ids < 100), Metaspace, and a
    post-processor appending `</s>`, as T5's. Returns the file."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    words = ["▁a", "▁the", "▁piano", "▁calm", "▁melody", "▁with", "▁soft", "▁strings", "▁drum",
             "▁and", "▁bass", "ing", "s", "er", "▁jazz"]
    pieces += [(w, -3.0 - 0.1 * i) for i, w in enumerate(words)]
    pieces += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz.,!'"]
    pieces += [("▁" + c, -7.5) for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "</s>", "<unk>")])
    path = Path(directory) / "tokenizer.json"
    tok.save(str(path))
    return path
