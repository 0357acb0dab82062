"""The benchmark harness: the ``--quick`` command end to end (what CI runs), the naive
contender's masks, the byte counts, the budget, and the report of skipped and failed runs.
Figures are never asserted: timings on a shared machine are noise."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import eager_contender, figures, harness, report, targets, timing
from benchmarks.bandwidth import CopyBandwidth, bytes_moved
from benchmarks.cases import Case, default_cases
from benchmarks.contenders import CONTENDERS, Contender
from benchmarks.harness import Budget, CaseResult, Measurement, Run, Settings, default_settings
from blocksparsity import kernels

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_command_writes_table_json_and_chart(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--json", str(out_json), "--plot", str(out_png)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| case | moved | contender |" in done.stdout and "Targets on the CPU" in done.stdout
    assert "\r" not in done.stderr  # stderr is a pipe here: no progress-bar refreshes in the log
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(out_json.read_text())
    assert {"date", "device_name", "torch", "triton", "cuda", "commit"} <= set(data["machine"])
    assert data["copy_gbps"] > 0 and not data["interrupted"]
    assert list(data["contenders"]) == ["reference", "naive", "ours-torch"]
    cases = default_cases("cpu", quick=True)
    assert [c["name"] for c in data["cases"]] == [c.name for c in cases]
    for entry, case in zip(data["cases"], cases, strict=True):
        results = {r["contender"]: r for r in entry["results"]}
        assert entry["bytes_moved"] == bytes_moved(case)
        ours = results["ours-torch"]
        assert ours["status"] == "ok", ours
        assert ours["seconds"] > 0 and ours["gbps"] > 0 and ours["pct_of_copy_bandwidth"] > 0
        assert ours["peak_extra_x_input"] is not None and len(ours["samples_seconds"]) >= 3
        if case.scale or case.op == "weight_update":  # only this package takes a scale or updates weights
            assert results["naive"]["status"] == results["reference"]["status"] == "n/a"
            continue
        assert results["naive"]["status"] == "ok"
        assert set(ours["speedup_over"]) >= {"naive"}
        if case.op == "block_mask":
            assert results["reference"]["status"] == "ok"
            assert ours["speedup_over"]["reference"] == pytest.approx(results["reference"]["seconds"] / ours["seconds"])
        else:
            assert results["reference"]["status"] == "n/a"
    assert {t["description"] for t in data["targets"]} == {t.description for t in targets.evaluate([], "cpu")}


# ---------------------------------------------------------------- the naive contender
def tie_free(shape: tuple[int, int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Distinct magnitudes that bf16 holds exactly (2^e * (1 + m/128)), shuffled, random signs."""
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([2.0**e * (1 + m / 128) for e in range(-8, 8) for m in range(128)])
    x = values[torch.randperm(values.numel(), generator=g)[: shape[0] * shape[1]]].reshape(shape)
    return (x * (torch.randint(0, 2, shape, generator=g) * 2 - 1)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("zpb", [4, 3, 2, 1])
def test_naive_masks_equal_ours_on_tie_free_data(dtype, norm, zpb):
    x = tie_free((32, 48), dtype, seed=zpb)
    scores = kernels.block_norm(x, (1, 4), norm)
    assert torch.unique(x.float().abs()).numel() == x.numel() and torch.unique(scores).numel() == scores.numel()
    for level in (0.0, 0.3, 0.5, 1.0):
        k = round(level * x.numel() / 4)
        expected = kernels.block_mask(x, level, (1, 4), zpb, norm, backend="torch")
        assert torch.equal(eager_contender.block_mask(x, k, 4, zpb, norm), expected)
        y = x.clone()
        out, mask = eager_contender.sparsify(y, k, 4, zpb, norm)
        assert out is y and torch.equal(mask, expected) and torch.equal(y, x * expected)
    torch.testing.assert_close(eager_contender.block_norm(x, 4, norm), kernels.block_norm(x, (1, 4), norm, backend="torch"))


def test_contenders_say_why_they_cannot_run():
    mask_case, norm_case = Case("block_mask", (8, 8)), Case("block_norm", (8, 8))
    assert CONTENDERS["reference"].unsupported(mask_case, "cpu") is None
    assert CONTENDERS["reference"].unsupported(norm_case, "cpu").startswith("n/a")
    assert CONTENDERS["naive-compiled"].unsupported(mask_case, "cpu") == "n/a: cuda only"
    assert CONTENDERS["naive"].unsupported(Case("block_mask", (8, 6)), "cpu").startswith("n/a")
    x = mask_case.make_input("cpu")
    assert CONTENDERS["ours-triton"](mask_case, x) is None
    assert torch.equal(CONTENDERS["ours-torch"](mask_case, x)(), kernels.block_mask(x, 0.5, (1, 4), 4))


# ---------------------------------------------------------------- definitions
def test_bytes_moved_per_op():
    n = 1024 * 1024
    assert bytes_moved(Case("block_norm", (1024, 1024))) == 4 * n + 4 * n // 4
    assert bytes_moved(Case("block_mask", (1024, 1024))) == 4 * n + n  # read x once, write the mask
    assert bytes_moved(Case("block_mask", (1024, 1024), zeros_per_block=2)) == 2 * 4 * n + n  # x read twice
    assert bytes_moved(Case("sparsify", (1024, 1024), "bf16")) == 2 * n + n + 2 * n  # read x, write mask, write x
    assert CopyBandwidth(10**9, 1.0).gbps == 2.0


def test_default_cases_cover_the_issue():
    cases = default_cases("cpu")
    assert len(set(cases)) == len(cases) == 30
    assert Case("block_mask", (4096, 4096), scale="col") in cases  # the scale's cost (issue 22)
    update = Case("weight_update", (1024, 1024), zeros_per_block=2, sparsity_level=1.0)  # issue 22: per layer
    assert cases[-1] == update and cases[-1].name == "weight_update 1024x1024 fp32 L1 zpb=2"
    assert default_cases("cpu", matrix="update") == [update, Case("weight_update", (4096, 4096), zeros_per_block=2,
                                                                  sparsity_level=1.0)]  # 4096^2 opt-in: ~107 s a call
    assert default_settings("cpu", False, "update")["budget_seconds"] >= 300
    assert {(c.op, c.zeros_per_block) for c in cases} >= {("block_mask", 4), ("block_mask", 2), ("sparsify", 4), ("sparsify", 2)}
    assert {c.numel for c in cases} >= {4096**2, 8192**2, 10**8, 64 * 10**6}
    assert {c.norm for c in cases} == {"L1", "L2"} and {c.dtype for c in cases} == {"fp32", "bf16"}
    assert any(c.data == "ties" for c in cases)
    assert (10**7, 64) in {c.shape for c in default_cases("cuda")}
    assert len(default_cases("cpu", matrix="full")) == 65
    sizes = default_cases("cpu", matrix="sizes")  # the torch backend's bandwidth target: 2**24 to 2**28 elements
    assert {c.numel for c in sizes} == {2**24, 2**26, 2**28} and {c.dtype for c in sizes} == {"fp32", "bf16"}
    assert len(sizes) == 30 and max(c.numel for c in default_cases("cpu", quick=True, matrix="sizes")) <= 512**2


def test_budget_extrapolates_from_smaller_cases():
    budget = Budget(seconds_per_call=1.0, device="cpu")
    reference, small, big = CONTENDERS["reference"], Case("block_mask", (100, 100)), Case("block_mask", (1000, 1000))
    assert budget.why_skip(reference, big) is None  # nothing measured yet
    budget.record(reference, small, 0.05)  # 5 s per call at 100x the size
    assert budget.why_skip(reference, big).startswith("skipped: ~5.0 s/call > 1 s budget")
    assert budget.why_skip(reference, Case("block_mask", (1000, 1000), zeros_per_block=2)) is None  # another variant
    assert budget.why_skip(reference, Case("block_mask", (10**6, 10**6))).startswith("skipped")
    assert budget.first_call_too_slow(reference, 2.0).startswith("skipped: first calls took 2.0 s")


def test_report_of_a_run_with_skipped_failed_and_missing_figures():
    case, other = Case("block_mask", (1024, 1024)), Case("sparsify", (1024, 1024))
    results = [
        CaseResult(case, bytes_moved(case), {
            "reference": Measurement("skipped", "skipped: ~9.0 s/call > 4 s budget"),
            "naive": Measurement("failed", "failed: RuntimeError: boom"),
            "ours-torch": Measurement("ok", seconds=0.01, samples=[0.01] * 3, peak_extra_bytes=2 << 20),
        }),
        CaseResult(other, bytes_moved(other), {
            "reference": Measurement("n/a", "n/a: the reference only computes masks"),
            "naive": Measurement("ok", seconds=0.04, samples=[0.04] * 3),
            "ours-torch": Measurement("ok", seconds=0.01, samples=[0.01] * 3, memory_error="MemoryError: "),
        }),
    ]
    settings = Settings(device="cpu", repeats=3, copy_bytes=1 << 20, budget_seconds=4.0)
    machine = {"date": "today", "device_name": "a CPU", "cuda": "none", "torch": torch.__version__, "triton": "-",
               "python": "3", "commit": "abc", "cpu": "a CPU", "memory_gib": 1.0}
    run = Run(machine, settings, ["reference", "naive", "ours-torch"], [CopyBandwidth(1 << 20, 1e-3)], results, 1.0)
    text = report.markdown(run)
    assert "skipped: ~9.0 s/call > 4 s budget" in text and "failed: RuntimeError: boom" in text and "n/a:" in text
    rows = figures.rows(run)
    ours = [r for r in rows if r.contender == "ours-torch"]
    assert ours[0].peak_extra_x == 0.5 and ours[1].speedup == {"naive": 4.0} and ours[0].speedup == {}
    assert ours[1].gbps == pytest.approx(bytes_moved(other) / 0.01 / 1e9)
    speed, memory = targets.evaluate(rows, "cpu")
    assert speed.met is None and memory.measured == 0.5 and memory.met
    data = report.to_json(run)
    assert json.loads(json.dumps(data))["cases"][1]["results"][2]["memory_error"] == "MemoryError: "


def test_harness_reports_a_failing_contender_and_goes_on(monkeypatch):
    def broken(case, x):
        raise RuntimeError("no kernel for you")

    monkeypatch.setitem(CONTENDERS, "broken", Contender("broken", "raises", broken, lambda case: None))
    settings = Settings(device="cpu", repeats=2, copy_bytes=1 << 20, budget_seconds=10.0, memory=False, progress=False)
    cases = [Case("block_mask", (64, 64)), Case("block_norm", (64, 64))]
    run = harness.run(cases, ["broken", "ours-torch", "reference"], settings)
    first, second = (r.measurements for r in run.results)
    assert first["broken"].status == "failed" and "no kernel for you" in first["broken"].reason
    assert first["ours-torch"].status == "ok" and first["reference"].status == "ok" and len(first["ours-torch"].samples) >= 2
    assert second["reference"].status == "n/a" and second["ours-torch"].status == "ok"
    assert not run.interrupted and len(run.copy) == 2


# ---------------------------------------------------------------- the one entry point
def test_vs_reference_is_the_harness_on_its_two_4096_cases():
    from benchmarks import __main__ as cli

    args = cli.parse(cli.VS_REFERENCE)
    cases = [c.name for c in default_cases(args.device, args.quick, args.matrix) if any(f in c.name for f in args.filter)]
    assert cases == ["block_mask 4096x4096 fp32 L1 zpb=4", "block_mask 4096x4096 fp32 L1 zpb=2"]
    assert args.device == "cpu" and args.contenders == ["reference", "ours-torch"]


def test_subcommands_run_their_module_and_help_lists_them():
    from benchmarks import __main__ as cli

    done = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in (*cli.SUBCOMMANDS, "vs-reference"):
        assert f"\n    {name} " in done.stdout, name
    done = subprocess.run([sys.executable, "-m", "benchmarks", "sparsifier-step", "--scale", "0.002", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step() overhead over direct kernel calls" in done.stdout and "speedup over torch.ao" in done.stdout


# ---------------------------------------------------------------- one way to time, one set of cases
def test_prepare_gives_in_place_cases_their_input_back():
    in_place = next(c for c in default_cases("cpu", quick=True) if c.mutates_input)
    work, setup = harness.prepare(in_place, "cpu")
    pristine = in_place.make_input("cpu")
    work.zero_()
    setup()
    assert torch.equal(work, pristine)
    read_only = next(c for c in default_cases("cpu", quick=True) if not c.mutates_input)
    x, setup = harness.prepare(read_only, "cpu")
    assert torch.equal(x, read_only.make_input("cpu")) and setup is timing.nothing


def test_one_timed_call_runs_setup_untimed():
    calls = []
    seconds = timing.once(lambda: calls.append("run"), lambda: (calls.append("setup"), time.sleep(0.05)))
    assert calls == ["setup", "run"] and 0 <= seconds < 0.05


@pytest.mark.slow
def test_pytest_benchmark_view_is_the_harness_cases_and_contenders():
    """benchmarks/bench_harness.py collects one test per harness case and contender, and runs
    (one quick case, every contender that runs on the CPU, timing disabled)."""
    cases = default_cases("cpu", quick=True)
    base = [sys.executable, "-m", "pytest", "benchmarks/bench_harness.py", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    done = subprocess.run([*base, "--collect-only"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids = set(re.findall(r"test_contender\[(.*)\]", done.stdout))
    assert ids == {f"{c.name.replace(' ', '-')}-{name}" for c in cases for name in CONTENDERS}
    first = cases[0].name.replace(" ", "-")
    done = subprocess.run([*base, "--benchmark-disable", "-k", first], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = {name for name in CONTENDERS if CONTENDERS[name].unsupported(cases[0], "cpu") is None}
    assert re.search(rf"\b{len(ran)} passed", done.stdout), done.stdout[-3000:]
