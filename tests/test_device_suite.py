"""The device suite's CPU smoke run: every family's tiny train step compiles, runs two
steps through the suite's own code path, and gets a row with a finite time and FLOPs."""

import math

import jax

from benchmarks import device_suite


def test_every_family_compiles_runs_and_reports(capsys):
    # float32 and batch 2: bfloat16 is emulated on CPU, and the suite's speed
    # figures are for accelerators; what this checks is that no family's step rots.
    results, table = device_suite.run(["--size", "tiny", "--steps", "2", "--batch", "2",
                                       "--dtype", "float32", "--devices", "1"])
    assert [r["family"] for r in results] == list(device_suite.FAMILIES)
    for r in results:
        assert "error" not in r, r
        assert math.isfinite(r["step_seconds"]) and r["step_seconds"] > 0, r
        assert r["flops"] > 0 and math.isfinite(r["loss"]), r
    assert table.count("\n| ") == len(device_suite.FAMILIES)            # a row per family
    assert "n/a" in table                      # no peak given on CPU: no MFU claimed
    assert jax.default_backend() == "cpu"
