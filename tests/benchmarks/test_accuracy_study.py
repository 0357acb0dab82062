"""The accuracy study (``python -m benchmarks.accuracy``): the quick command end to end (every
method has a row per task and level, reached sparsity within one block of the request, 2:4
rows really 2:4, JSON and PNG written), and the pieces whose arithmetic the figures rest on:
ModelPruning's compounding amounts, the in-place schedule's last level, counting zeros.
Accuracies and timings are never asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.accuracy import methods, study
from benchmarks.accuracy.__main__ import parse
from benchmarks.accuracy.methods import LEVELS, METHODS_BY_KEY, Plan, cubic, modelpruning_amount
from blocksparsity import CubicSLScheduler, DataNormSparsifier

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_study_every_method_has_a_row_and_reaches_its_level(tmp_path):
    out_json, out_png = tmp_path / "acc.json", tmp_path / "acc.png"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.accuracy", "--quick", "--seeds", "1", "--levels", "50%,2:4",
         "--json", str(out_json), "--plot", str(out_png)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| level | method |" in done.stdout and "Goals:" in done.stdout
    assert "in place: hook time at most" in done.stdout and "one mask update per epoch: our training time" in done.stdout
    assert "it/s" not in done.stderr and "run/s" not in done.stderr  # no progress bar lines when not on a terminal
    assert "GPU available" not in done.stderr and "fit` stopped" not in done.stderr  # no Lightning lines per run
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(out_json.read_text())
    rows = data["rows"]
    assert {r["task"] for r in rows} == {"digits-mlp", "digits-cnn", "char-lm"}
    for task in ("digits-mlp", "digits-cnn", "char-lm"):
        got = {(r["method"], r["level"]) for r in rows if r["task"] == task}
        want = {("dense", "dense")} | {(m, lv) for m in METHODS_BY_KEY if m != "dense" for lv in ("50%", "2:4")}
        assert got == want, task
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        assert r["max_deviation_units"] <= 1, r  # within one block (element, slice) of the request, per tensor
        assert abs(r["reached"] - r["expected"]) <= 0.01, r
        assert r["two_four"] is (True if r["level"] == "2:4" else None), r
        assert r["fit_seconds"] > 0 and (r["sparsity_seconds"] is None) == (r["method"] == "dense")
    by = {(r["task"], r["method"], r["level"]): r for r in rows}
    # every method that can runs: ours everywhere; torch.ao on the 2-D models; ModelPruning at block levels
    for task in ("digits-mlp", "digits-cnn", "char-lm"):
        for m in ("post", "copy", "inplace", "inplace-epoch"):
            assert by[(task, m, "50%")]["status"] == by[(task, m, "2:4")]["status"] == "ok"
        assert by[(task, "mp-l1", "50%")]["status"] == "ok"
        assert by[(task, "mp-l1", "2:4")]["status"].startswith("n/a: ")
    for task in ("digits-mlp", "char-lm"):
        assert by[(task, "ao-post", "2:4")]["status"] == by[(task, "ao-copy", "50%")]["status"] == "ok"
        assert by[(task, "mp-ln", "50%")]["status"] == "ok"
        # torch.ao's sparsifier gives the same masks as ours on tie-free trained weights: the same copies
        assert by[(task, "ao-post", "50%")]["metric"] == by[(task, "post", "50%")]["metric"]
    assert "only supports 2-D" in by[("digits-cnn", "ao-post", "50%")]["status"]
    assert "input channel" in by[("digits-cnn", "mp-ln", "50%")]["status"]
    assert {c["method"] for c in data["cells"]} == set(METHODS_BY_KEY)
    assert not [n for n in data["notes"] if "did not reproduce" in n]  # the copies' run is the dense run again

    again = subprocess.run([sys.executable, "-m", "benchmarks.accuracy", "--from-json", str(out_json)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == done.stdout  # the report is a function of the saved figures


@pytest.mark.parametrize("final", [0.5, 0.75, 0.9])
@pytest.mark.parametrize("epochs", [1, 4, 30])
def test_modelpruning_amounts_compound_to_the_final_level(final, epochs):
    amount = modelpruning_amount(final, Plan(epochs, 10))
    remaining = math.prod(1 - amount(e) for e in range(epochs))
    assert remaining == pytest.approx(1 - final, abs=1e-12)
    assert all(0 <= amount(e) < 1 for e in range(epochs))
    assert amount(epochs) == 0  # nothing after the ramp


@pytest.mark.parametrize(("epochs", "steps_per_epoch"), [(1, 10), (6, 22), (30, 22), (12, 32), (2, 5)])
def test_in_place_schedule_reaches_the_final_level(epochs, steps_per_epoch):
    """The callback computes a mask, then steps the scheduler: replay that order."""
    plan = Plan(epochs, steps_per_epoch)
    sparsifier = DataNormSparsifier(sparsity_level=0.9, sparse_block_shape=(1, 4))
    sparsifier.add_data("w", torch.randn(4, 8))
    scheduler = CubicSLScheduler(sparsifier, init_sl=0.0, init_t=0, delta_t=1, total_t=plan.ramp_updates())
    levels = []
    for _ in range(plan.steps // methods.EVERY_N_STEPS):
        levels.append(sparsifier.data_groups["w"]["sparsity_level"])  # the level this update's mask uses
        sparsifier.step()
        scheduler.step()
    if levels:
        assert levels[-1] == 0.9
        first_final = levels.index(0.9) + 1
        assert first_final <= max(2, round(methods.RAMP_FRACTION * len(levels)))


def test_cubic_ramp_ends():
    assert cubic(0.9, 0) == 0 and cubic(0.9, 1) == 0.9 and cubic(0.9, 2) == 0.9 and 0 < cubic(0.9, 0.5) < 0.9


def test_measure_counts_zeros_of_the_pruned_tensors_only():
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model[0].weight[:, :4] = 0  # 16 of 32: 50%, every row 1 block of 4 zero
        model[0].bias.zero_()  # biases are not pruned tensors: not counted
        model[1].weight[:, ::2] = 0  # 8 of 16 zero, 2 in each group of 4
    two_four = study.measure(model, LEVELS["2:4"], "block")
    assert two_four["reached"] == 24 / 48 and two_four["max_deviation_units"] == 0
    assert two_four["two_four"] is False  # model[0] has 4 zeros in one group, none in the other
    with torch.no_grad():
        model[0].weight[:, :4] = 1
        model[0].weight[:, 1::2] = 0
    assert study.measure(model, LEVELS["2:4"], "block")["two_four"] is True
    half = study.measure(model, LEVELS["75%"], "element")
    assert half["reached"] == 0.5 and half["max_deviation_units"] == 0.25 * 32 and "two_four" not in half


def test_measure_refuses_a_model_with_pruning_not_made_permanent():
    model = nn.Sequential(nn.Linear(8, 4))
    torch.nn.utils.prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(RuntimeError, match="weight_orig"):
        study.measure(model, LEVELS["50%"], "element")


def test_torch_ao_sees_only_the_pruned_tensors():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 4))
    view = methods._PrunedWeights(model)
    assert view.names == ["0.weight", "1.weight"]
    assert [p for p in view.parameters()] == [model[0].weight, model[1].weight]  # the same objects, no copies


@pytest.mark.parametrize("argv", [["--levels", "60%"], ["--levels", ""], ["--seeds", "0"], ["--threads", "0"],
                                  ["--methods", "nope"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse(argv)
    assert "error" in capsys.readouterr().err


def test_help_lists_the_levels(capsys):
    with pytest.raises(SystemExit) as stop:
        parse(["--help"])
    assert stop.value.code == 0
    assert "50%,75%,90%,2:4" in capsys.readouterr().out
