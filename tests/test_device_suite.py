"""The device suite's CPU smoke run: every family's tiny train step compiles, runs two
steps through the suite's own code path, and gets a row with a finite time and FLOPs."""

import math

import jax

from benchmarks import device_suite


def _cells(table: str) -> dict[str, dict[str, str]]:
    """The markdown table's body rows: family -> {column: cell}."""
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {cells[0].strip(): dict(zip(device_suite.COLUMNS, (c.strip() for c in cells)))
            for cells in rows}


def test_every_family_compiles_runs_and_reports(capsys):
    # What this checks is that no family's step, batch or report rots, not speed: so
    # batch 2 on one device, float32 (bfloat16 is emulated on a CPU; the codec's step
    # compiled 1.5x slower) and no LLVM optimization (the codec's init and step
    # compiles took 46 s each with it on this 2-core CPU).
    results, table = device_suite.run(["--size", "tiny", "--steps", "2", "--batch", "2",
                                       "--dtype", "float32", "--devices", "1",
                                       "--fast-compile"])
    printed = capsys.readouterr().out
    assert jax.default_backend() == "cpu"
    assert table in printed
    assert not device_suite.failed(results), [r.get("error") for r in results]
    rows = _cells(table)
    assert list(rows) == list(device_suite.FAMILIES)                   # a row per family
    for result in results:
        row = rows[result["family"]]
        assert row["size"] == "tiny" and row["batch"] == "2"
        assert math.isfinite(float(row["step (ms)"].replace(",", ""))) and result["step_seconds"] > 0
        assert result["flops"] > 0 and float(row["GFLOP/step"].replace(",", "")) > 0
        assert row["MFU"] == "n/a"                 # no peak given on a CPU: no MFU claimed
        assert math.isfinite(result["loss"]) and result["params"] > 0


class _Compiled:
    def __init__(self, cost):
        self.cost = cost

    def cost_analysis(self):
        return self.cost


def test_flops_of_reads_every_cost_analysis_shape():
    assert device_suite.flops_of(_Compiled({"flops": 3.0, "bytes accessed": 9.0})) == 3.0
    assert device_suite.flops_of(_Compiled([{"flops": 1.0}, {"flops": 2.0}])) == 3.0
    assert device_suite.flops_of(_Compiled([{"bytes accessed": 1.0}])) is None
    assert device_suite.flops_of(_Compiled(None)) is None


def test_a_failed_family_gets_a_row_and_a_failing_exit(capsys):
    results, table = device_suite.run(["--families", "nonexistent", "--size", "tiny"])
    assert device_suite.failed(results) == ["nonexistent"]
    row = _cells(table)["nonexistent"]
    assert "unknown family" in row["notes"] and row["step (ms)"] == "-"
    assert device_suite.main(["--families", "nonexistent"]) == 1
    capsys.readouterr()


def test_op_profile_names_the_scopes_that_take_the_time():
    # benchmarks/op_profile.py: a traced program's op time, grouped by the module
    # (name scope) that made each instruction.
    import jax.numpy as jnp

    from benchmarks import op_profile

    def program(x, w):
        with jax.named_scope("big"):
            y = jnp.tanh(x @ w) @ w
        with jax.named_scope("small"):
            return y + 1.0

    x, w = jnp.ones((64, 256)), jnp.full((256, 256), 0.01)
    compiled = jax.jit(program).lower(x, w).compile()
    table = op_profile.op_profile(compiled, x, w, runs=2, depth=1)
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("| ")]
    assert rows[0] == "big" and "summed op time" in table
    assert op_profile.split_source("jit(f)/transpose(jvp(M))/layer_0/mlp/dot_general", 2) == (
        "layer_0/mlp", "bwd", "dot_general")


def test_sharding_strategies_runs_every_rule_table():
    # benchmarks/sharding_strategies.py: each strategy compiles and runs its own sharded
    # state (one step), and reports memory from the compiled program.
    from benchmarks import sharding_strategies

    table = sharding_strategies.main(["--model", "mel_transformer", "--size", "tiny",
                                      "--batch", "8", "--steps", "1"])
    lines = table.splitlines()
    rows = lines[lines.index("|---|---|---:|---:|---:|---:|---:|") + 1:]
    assert [r.split("|")[1].strip() for r in rows] == ["dp", "fsdp", "tp", "fsdp_tp"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[3:-1]]
        assert all(float(c) > 0 for c in cells), row
