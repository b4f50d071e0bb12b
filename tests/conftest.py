"""Test set-up: 8 simulated CPU devices, repo root importable, no network."""

import os
import sys
from pathlib import Path

# Must happen before jax is imported anywhere: every test sees 8 CPU devices, so
# mesh tests run data/FSDP/tensor parallel for real; single-device references
# use jax.devices()[:1].
#
# The test steps are tiny, so XLA:CPU spends seconds compiling each for
# milliseconds of running: a cheap compile (no LLVM optimization, no expensive
# LLVM passes, the classic loop emitters instead of the MLIR fusion emitters)
# makes compiles ~4x faster and leaves the numbers the same (no fast-math;
# results agree to float32 rounding). AUDIOLM_JAX_TEST_FAST_COMPILE=0 keeps
# XLA's defaults; flags already in XLA_FLAGS come later and win over these.
_fast = ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
         "--xla_cpu_use_fusion_emitters=false"]
if os.environ.get("AUDIOLM_JAX_TEST_FAST_COMPILE", "1") == "0":
    _fast = []
os.environ["XLA_FLAGS"] = " ".join(_fast + os.environ.get("XLA_FLAGS", "").split()
                                   + ["--xla_force_host_platform_device_count=8"])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A persistent compilation cache shared by the test run's workers: tests build
# the same steps in new closures (a single-device reference per mesh case, a
# trainer run and its resume), which jit's in-memory cache cannot see but the
# HLO-keyed disk cache can. A fresh clone starts it empty (CI measures that);
# later local runs reuse it. AUDIOLM_JAX_TEST_CACHE="" turns it off.
_cache = os.environ.get("AUDIOLM_JAX_TEST_CACHE",
                        str(Path(__file__).resolve().parents[1] / ".cache" / "jax_tests"))
if _cache:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# torchaudio (installed with the `vocos` reference of the vocoder parity test) ships a
# CUDA-linked extension that fails to load beside the CPU torch the test extra pins,
# and transformers imports torchaudio whenever it is installed. Its pure-torch
# transforms work without the extension once a stub stands in for it, registered
# here for every test before anything imports torchaudio (tests/vocos_reference.py).
from tests.vocos_reference import stub_torchaudio_extension  # noqa: E402

stub_torchaudio_extension()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

# Under `--dist loadfile` (the Makefile's PYTEST_ARGS, with --no-loadscope-reorder)
# a worker takes the next file in collection order. The files that take longest
# (most compiling; measured on a 2-core CPU) go first so that the two workers
# finish together; every other file keeps its alphabetical place after them.
_SLOWEST_FIRST = ("test_codec_training.py", "test_vocoder_training.py", "test_faults.py",
                  "test_device_suite.py", "test_voicebox.py",
                  "test_semantic_encoder.py",
                  "test_mulan.py", "test_phoneme_recognizer.py", "test_codec_layers.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(_SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: file order kept


@pytest.fixture
def audio_folder(tmp_path):
    """12 two-second 24 kHz clips (chirps with amplitude modulation) + sidecar text."""
    folder = tmp_path / "audio"
    folder.mkdir()
    t = np.arange(48_000) / 24_000
    for i in range(12):
        x = 0.3 * np.sin(2 * np.pi * (150 + 25 * i) * t * (1 + 0.2 * t)) * (0.6 + 0.4 * np.sin(4 * t + i))
        sf.write(folder / f"clip{i:02d}.wav", x.astype(np.float32), 24_000)
        (folder / f"clip{i:02d}.txt").write_text(f"clip number {i}\n")
    return folder
