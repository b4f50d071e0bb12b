"""The `vocos` package as a reference implementation in tests (random weights, no downloads).

`vocos` imports torchaudio, whose last release (2.11.1) ships a CUDA-linked
extension that fails to load beside the CPU torch the test extra pins. The
transforms Vocos uses are pure torch, and torchaudio imports without its
extension when a stub `torchaudio._extension` is registered first. The shim
lives here, in the tests, never in the library.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest


def stub_torchaudio_extension() -> None:
    """Registers the stub `torchaudio._extension` (idempotent; tests/conftest.py calls it)."""
    if "torchaudio._extension" not in sys.modules:
        stub = types.ModuleType("torchaudio._extension")
        stub._IS_TORCHAUDIO_EXT_AVAILABLE = False
        stub.fail_if_no_align = lambda fn: fn
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio._extension", None)
        sys.modules["torchaudio._extension"] = stub


def import_vocos():
    """The `vocos` module (skips the test when it is not installed)."""
    stub_torchaudio_extension()
    return pytest.importorskip("vocos")
