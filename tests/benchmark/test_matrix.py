"""``python -m longvie.benchmark --mode-matrix`` on the tiny preset: all 24 combinations of offload x FP8 x compile
x step cache run on the CPU with their stand-ins (group offload on a CPU stream, model offload's hook, inductor,
weight-only FP8) and none crashes; FP8 rows compute with float8 weights; each row is checked against the exact path."""
from __future__ import annotations

import time

import pytest
import torch

from longvie.acceleration.compile import inductor_available
from longvie.benchmark import matrix


@pytest.fixture(scope="module")
def rows_and_facts(tmp_path_factory):
    import torch._inductor.config as inductor_config

    # inductor on a 2-core CI machine: one compile worker, scalar C++ (faster to build; same graphs, same checks)
    with inductor_config.patch({"compile_threads": 1, "cpp.vec_isa_ok": False}):
        graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        started = time.perf_counter()
        rows, facts = matrix.run_matrix("tiny", "cpu", torch.float32, steps=4)
        facts["seconds"] = time.perf_counter() - started
        facts["new_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
    return rows, facts


def test_every_combination_runs(rows_and_facts):
    rows, facts = rows_and_facts
    combos = {(r.offload, r.fp8, r.compile, r.cache) for r in rows}
    assert len(rows) == len(combos) == 24
    compile_refusal = inductor_available()
    for r in rows:
        assert not r.result.startswith("crashed"), (r, r.modes.get("traceback"))
        if r.compile == "on" and compile_refusal:
            assert r.result.startswith("refused: compile")
        else:
            assert r.result == "ok", r
    assert facts["shared_weights_unchanged"]
    print(f"\nmode matrix: {facts['seconds']:.1f} s for 24 rows")


def test_fp8_rows_compute_with_float8_weights_and_the_others_with_float32(rows_and_facts):
    rows, _ = rows_and_facts
    for r in (r for r in rows if r.ok):
        layers = 12 * (4 + 2 * 2)  # Linear layers per block x blocks; every block runs at least once per call
        seen = r.weight_dtypes
        if r.fp8 == "on":
            assert set(seen) == {"float8_e4m3fn"}, r
            assert r.modes["fp8"] == "weight-only" and r.modes["fp8_layers"] == layers
        else:
            assert set(seen) == {"float32"}, r
        first_unit = 12 * 3  # main block 0 + dense and sparse control block 0: every call runs them
        reads = sum(seen.values())
        assert (reads == 4 * layers) if r.cache == "off" else (4 * first_unit <= reads <= 4 * layers), r
        assert r.weight_devices == ["cpu"]


def test_each_row_against_the_exact_path(rows_and_facts):
    rows, _ = rows_and_facts
    ok = {(r.offload, r.fp8, r.compile, r.cache): r for r in rows if r.ok}
    for (offload, fp8, compile_, cache), r in ok.items():
        if fp8 == "off" and cache == "off":
            # same math: offload moves the same bytes (exact); compile reorders float32 sums
            assert r.max_abs_diff <= (1e-5 if compile_ == "on" else 0.0), r
        else:
            assert 0 < r.max_abs_diff < 0.1, r
        if compile_ == "on":
            assert r.modes["compiled"] == {"transformer.blocks": 4, "control.control_blocks_dense": 2,
                                           "control.control_blocks_sparse": 2}
        # FP8 and offload are independent: same FP8 numbers whatever the placement (compile: float32 noise)
        same_math = ok.get(("none", fp8, compile_, cache))
        if same_math is not None:
            assert abs(r.max_abs_diff - same_math.max_abs_diff) <= 1e-5
    assert rows_and_facts[1]["new_graphs"] >= (0 if inductor_available() else 2)  # FP8 blocks compiled anew


def test_host_to_device_bytes_per_call(rows_and_facts):
    rows, _ = rows_and_facts
    ok = {(r.offload, r.fp8, r.compile, r.cache): r for r in rows if r.ok}
    for (offload, fp8, compile_, cache), r in ok.items():
        assert r.peak_bytes > 0
        if offload != "group":
            assert r.h2d_bytes_per_call == 0  # resident weights (model offload on the CPU moves nothing)
            continue
        assert r.modes["offload_detail"]["units"] == 4
        full = r.modes["offload_detail"]["block_bytes"]
        if cache == "off":  # every block every call, at least its own bytes (plus alignment padding)
            assert full <= r.h2d_bytes_per_call <= 1.05 * full
        else:
            assert r.h2d_bytes_per_call <= ok[(offload, fp8, compile_, "off")].h2d_bytes_per_call
            if r.cached_calls:
                assert r.h2d_bytes_per_call < full
    for compile_, cache in [(c, k) for c in ("off", "on") for k in ("off", "firstblock")]:
        if ("group", "on", compile_, cache) in ok:
            assert ok[("group", "on", compile_, cache)].h2d_bytes_per_call < \
                0.4 * ok[("group", "off", compile_, cache)].h2d_bytes_per_call


def test_the_table_has_the_issue_columns(rows_and_facts, capsys):
    rows, facts = rows_and_facts
    table = matrix.format_rows(rows, cpu=True)
    lines = table.splitlines()
    assert lines[0] == ("| offload | fp8 | compile | cache | result | max abs diff vs exact | weight dtype seen at "
                        "forward | peak memory (RSS) | host->device bytes per call |")
    assert len(lines) == 2 + 24 and "on (weight-only)" in table and "float8_e4m3fn x" in table


def test_the_release_path_in_bfloat16(monkeypatch):
    """``--preset release`` builds the real block layout (40 main blocks > 12 control blocks) in bfloat16 from
    random weights; here with narrow widths and 13 blocks so that it runs on a CPU in seconds."""
    small = dict(matrix.RELEASE_TRANSFORMER, num_attention_heads=2, attention_head_dim=32, text_dim=32, image_dim=32,
                 ffn_dim=128, num_layers=13, added_kv_proj_dim=64, freq_dim=32)
    monkeypatch.setattr(matrix, "RELEASE_TRANSFORMER", small)
    rows, facts = matrix.run_matrix("release", "cpu", torch.bfloat16, frames=5, height=32, width=48, steps=4,
                                    rows=[("none", "on", "off", "off"), ("group", "off", "off", "firstblock"),
                                          ("model", "on", "off", "off")])
    assert facts["dtype"] == "bfloat16" and facts["shared_weights_unchanged"]
    assert [r.result for r in rows] == ["ok"] * 3
    reads = 12 * (13 + 2 * 12) * 4  # Linear layers x blocks x calls
    assert rows[0].weight_dtypes == {"float8_e4m3fn": reads} and rows[2].weight_dtypes == rows[0].weight_dtypes
    assert set(rows[1].weight_dtypes) == {"bfloat16"} and rows[1].modes["offload_detail"]["units"] == 13
    assert rows[0].max_abs_diff == rows[2].max_abs_diff > 0
