"""Regenerates the "Layout" section of docs/architecture.md from the tree.

    python docs/gen_layout.py          # rewrite the section in place
    python docs/gen_layout.py --check  # exit 1 if the committed section is stale

Each Python module is listed with the first line of its docstring, so the map
says what the code says. `tests/test_layout.py` runs `--check`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layout:begin (docs/gen_layout.py) -->", "<!-- layout:end -->"
# Top-level folders mapped, and what each is for.
FOLDERS = {
    "audiolm_jax": "the library (importable from a notebook)",
    "configs": "ml_collections files: common.py, then configs/<family>/{tiny,base,large}.py",
    "train": "thin command-line trainers, train/<family>.py",
    "infer": "thin command-line tools",
    "benchmarks": "speed and quality against the PyTorch peers, the device suite",
    "tests": "pytest; tiny configs; no network, no GPU",
}


def summary(path: Path) -> str:
    """The first line of a module's docstring (or of its package's `__init__`)."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except SyntaxError:
        doc = None
    return doc.strip().splitlines()[0].strip() if doc else ""


def tree(folder: Path, depth: int) -> list[str]:
    lines = []
    entries = sorted(p for p in folder.iterdir()
                     if not p.name.startswith((".", "_")) and p.name != "__pycache__")
    for path in entries:
        indent = "  " * depth
        if path.is_dir() and (path / "__init__.py").exists():
            lines.append(f"{indent}{path.name}/  {summary(path / '__init__.py')}".rstrip())
            lines += tree(path, depth + 1)
        elif path.suffix == ".py":
            lines.append(f"{indent}{path.name}  {summary(path)}".rstrip())
    return lines


def layout() -> str:
    lines = ["```"]
    for name, what in FOLDERS.items():
        lines.append(f"{name}/  {what}")
        if name in ("audiolm_jax", "configs", "train", "infer"):
            lines += tree(ROOT / name, 1)
    lines.append("```")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the section is stale")
    args = parser.parse_args()
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + layout() + "\n" + text[end:]
    if args.check:
        if new != text:
            print(f"{DOC} is stale: run python docs/gen_layout.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
