"""N:M validation, the 2:4 semi-structured exporter (CPU: validates and reports, changes
nothing; CUDA: exported layers match the masked dense ones), and the verdict benchmark."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from blocksparsity import kernels
from blocksparsity.export import (
    ExportRecord,
    format_export_report,
    hardware_reason,
    is_n_m_sparse,
    n_m_violation,
    to_semi_structured,
)
from tests.helpers.devices import requires_cuda

MULTIPLES = "both sizes must be multiples of (and at least)"
CUDA = torch.device("cuda")  # a device object only; nothing is allocated on it without a GPU


def two_four(rows: int, cols: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """Random data pruned to 2:4 by the kernels, as DataNormSparsifier((1, 4), zeros_per_block=2, level 1.0) does."""
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return kernels.sparsify(x, 1.0, (1, 4), 2)[0]


# ---------------------------------------------------------------- N:M validation
@pytest.mark.parametrize(
    "rows, n, m, expected",
    [
        ([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]], 2, 4, True),  # 2 and 0 nonzeros
        ([[1.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]], 2, 4, True),
        ([[1.0, 5.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]], 2, 4, False),  # one group of 3
        ([[1.0, 1.0, 1.0, 1.0]], 2, 4, False),
        ([[1.0, 1.0, 1.0, 1.0]], 4, 4, True),
        ([[0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]], 1, 4, True),
        ([[0.0, 7.0, 1.0, 0.0]], 1, 4, False),
        ([[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]], 2, 4, False),  # last dim 6 is not a multiple of 4
        ([[1.0, 0.0], [0.0, 1.0]], 1, 2, True),
        ([[-0.0, -0.0, 1.0, 2.0]], 2, 4, True),  # -0.0 is zero
        ([[float("nan"), 0.0, 1.0, 2.0]], 2, 4, False),  # NaN is not
    ],
)
def test_n_m_on_constructed_patterns(rows, n, m, expected):
    x = torch.tensor(rows)
    assert is_n_m_sparse(x, n, m) is expected
    assert (n_m_violation(x, n, m) is None) is expected


def test_n_m_groups_run_along_the_last_dimension():
    w = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]])
    assert is_n_m_sparse(w)  # rows are 2:4 ...
    pairs = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).repeat(4, 1)
    assert is_n_m_sparse(pairs) and not is_n_m_sparse(pairs.t())  # ... not columns
    assert is_n_m_sparse(w.reshape(2, 1, 4))  # 3-D: still along the last dim
    assert n_m_violation(torch.ones(3, 8)) == "6 of 6 groups of 4 hold more than 2 nonzeros"


def test_n_m_accepts_masks_and_empty_tensors():
    keep = torch.tensor([[True, False, True, False]])
    assert is_n_m_sparse(keep) and is_n_m_sparse(keep.to(torch.int8))
    assert not is_n_m_sparse(torch.ones(1, 4, dtype=torch.bool))
    assert is_n_m_sparse(torch.empty(0, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_2_4_masks_are_2_4_and_half_masks_are_not(dtype):
    assert is_n_m_sparse(two_four(64, 96, dtype))
    x = torch.randn(64, 96).to(dtype)
    assert not is_n_m_sparse(kernels.sparsify(x, 0.5, (1, 4), 2)[0])  # unpruned blocks keep 4
    assert is_n_m_sparse(kernels.sparsify(x, 1.0, (1, 4), 3)[0], 1, 4)


def test_reference_sparsifier_2_4_masks_pass():
    from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier

    w = nn.Parameter(torch.randn(32, 64))
    sparsifier = DataNormSparsifier(sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2)
    sparsifier.add_data("w", w)
    sparsifier.step()
    assert is_n_m_sparse(sparsifier.get_mask("w"))
    assert is_n_m_sparse(sparsifier.get_data("w", return_original=False))


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"tensor": [[1.0, 0.0]]}, TypeError, "tensor"),
        ({"tensor": torch.tensor(1.0)}, ValueError, "tensor"),
        ({"n": 5}, ValueError, "n must"),
        ({"n": -1}, ValueError, "n must"),
        ({"m": 0}, ValueError, "m must"),
        ({"n": 2.0}, TypeError, "n must"),
        ({"m": True}, TypeError, "m must"),
    ],
)
def test_n_m_bad_arguments_name_themselves(kwargs, error, name):
    x = torch.randn(4, 8)
    before = x.clone()
    with pytest.raises(error, match=name):
        is_n_m_sparse(**{"tensor": x, **kwargs})
    assert torch.equal(x, before)


# ---------------------------------------------------------------- exporter on the CPU
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(64, 128)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(128, 128, bias=False), nn.Linear(128, 32))
        with torch.no_grad():
            self.up.weight.copy_(two_four(128, 64, seed=1))
            self.block[0].weight.copy_(two_four(128, 128, seed=2))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_exporter_on_cpu_changes_nothing_and_says_why(caplog):
    model = Net()
    before, params = snapshot(model), dict(model.named_parameters())
    with caplog.at_level(logging.INFO, logger="blocksparsity.export"):
        report = to_semi_structured(model)
    assert [r.name for r in report] == ["up", "block.0", "block.1"]
    assert [r.is_2_4 for r in report] == [True, True, False]
    assert not any(r.exported for r in report)
    assert report[0].reason.startswith("device cpu: semi-structured sparsity needs a CUDA GPU")
    assert report[2].reason == "not 2:4: 1024 of 1024 groups of 4 hold more than 2 nonzeros"
    assert report[0] == ExportRecord("up", False, report[0].reason, (128, 64), "float32", "cpu", True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p is params[k] for k, p in model.named_parameters())
    logged = {(r.levelname, r.getMessage().split(" ")[0]) for r in caplog.records}
    assert logged == {("WARNING", "up"), ("WARNING", "block.0"), ("INFO", "block.1")}
    table = format_export_report(report)
    assert table.splitlines()[0].split() == ["layer", "shape", "dtype", "device", "2:4", "exported", "reason"]
    assert "128x64" in table and "not 2:4" in table


def test_exporter_checks_given_masks_against_the_weights():
    model = Net()
    good = model.up.weight != 0
    report = to_semi_structured(model, {"up.weight": good, "block.0": torch.ones(128, 128, dtype=torch.bool)})
    assert report[0].is_2_4 and report[0].reason.startswith("device cpu")
    assert report[1].reason == "not 2:4: mask: 4096 of 4096 groups of 4 hold more than 2 nonzeros"

    unmasked = Net()
    with torch.no_grad():
        unmasked.up.weight.fill_(1.0)
    report = to_semi_structured(unmasked, {"up": good})
    stray = int((~good).sum())
    assert report[0].reason == f"not 2:4: {stray} weights are nonzero where the mask is False (apply or squash the mask first)"
    report = to_semi_structured(model, {"up": torch.ones(3, 3, dtype=torch.bool)})
    assert report[0].reason == "not 2:4: mask must have the weight's shape (128, 64); got (3, 3)"


def test_exporter_skips_parametrized_weights():
    from torch.nn.utils import parametrize

    class Identity(nn.Module):
        def forward(self, w):
            return w

    model = Net()
    parametrize.register_parametrization(model.up, "weight", Identity())
    report = to_semi_structured(model)
    assert report[0].reason == "weight is parametrized: squash the mask first"


def test_exporter_dry_run_and_single_layer():
    layer = nn.Linear(64, 16)
    with torch.no_grad():
        layer.weight.copy_(two_four(16, 64))
    report = to_semi_structured(layer, dry_run=True)
    assert [r.name for r in report] == [""] and report[0].is_2_4 and not report[0].exported


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"module": torch.randn(4, 4)}, TypeError, "module"),
        ({"masks": [1]}, TypeError, "masks"),
        ({"dry_run": 1}, TypeError, "dry_run"),
    ],
)
def test_exporter_bad_arguments(kwargs, error, name):
    model = Net()
    before = snapshot(model)
    with pytest.raises(error, match=name):
        to_semi_structured(**{"module": model, **kwargs})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "shape, dtype, capability, backend, expected",
    [
        ((128, 64), torch.bfloat16, (9, 0), "cusparselt", None),
        ((128, 64), torch.float16, (8, 0), "cusparselt", None),
        ((64, 64), torch.bfloat16, (8, 0), "cutlass", None),
        ((32, 32), torch.int8, (8, 6), "cusparselt", None),
        ((128, 64), torch.bfloat16, (7, 5), "cusparselt", "compute capability (7, 5) < 8.0"),
        ((128, 64), torch.float32, (8, 0), "cusparselt", "dtype float32 not supported"),
        ((128, 64), torch.float64, (9, 0), "cutlass", "dtype float64 not supported"),
        ((100, 64), torch.bfloat16, (8, 0), "cusparselt", f"shape (100, 64) not supported by cusparselt: {MULTIPLES} (16, 16)"),
        ((128, 32), torch.bfloat16, (8, 0), "cutlass", f"shape (128, 32) not supported by cutlass: {MULTIPLES} (32, 64)"),
        ((16, 32), torch.int8, (8, 0), "cusparselt", "shape (16, 32) not supported by cusparselt"),
    ],
)
def test_hardware_constraints_follow_torch_tables(shape, dtype, capability, backend, expected):
    why = hardware_reason(shape, dtype, CUDA, capability, backend)
    assert why is None if expected is None else why.startswith(expected), why
    assert hardware_reason(shape, dtype, torch.device("cpu"), None, backend).startswith("device cpu")


# ---------------------------------------------------------------- exporter on a GPU
@requires_cuda
@pytest.mark.cuda
def test_exported_layers_match_masked_dense_layers():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("needs compute capability 8.0+")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256), nn.Linear(256, 24)).to("cuda", torch.bfloat16)
    masks = {}
    with torch.no_grad():
        for i in (0, 2):
            _, masks[f"{i}.weight"] = kernels.sparsify(model[i].weight, 1.0, (1, 4), 2, inplace=True)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(37, 256, device="cuda", dtype=torch.bfloat16)
    expected = model(x)

    report = to_semi_structured(model, masks)
    assert [r.exported for r in report] == [True, True, False], format_export_report(report)
    assert report[2].reason.startswith("not 2:4")
    from torch.sparse import SparseSemiStructuredTensor

    for i in (0, 2):
        assert isinstance(model[i].weight, SparseSemiStructuredTensor)
        assert torch.equal(model[i].weight.to_dense(), dense[f"{i}.weight"])  # accepted as is: no re-pruning
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    again = to_semi_structured(model)
    assert [r.reason for r in again[:2]] == ["already semi-structured"] * 2


# ---------------------------------------------------------------- the verdict benchmark
def test_verdict_words():
    from benchmarks.semi_structured import verdict

    assert verdict(1.6) == "2:4 faster (1.60x)"
    assert verdict(0.5) == "dense faster (2.00x)"
    assert verdict(1.01) == "no clear difference"


def test_verdict_benchmark_runs_here(tmp_path, capsys):
    from benchmarks.semi_structured import main

    out = tmp_path / "verdict.json"
    assert main(["--m", "64", "--nk", "256x256", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    if report["available"]:
        assert len(report["results"]) == 1 and report["results"][0]["m"] == 64
    else:
        assert report["results"] == [] and "compute capability 8.0" in report["reason"]
        assert "not available here" in printed and "(64, 256, 256)" in printed


def test_verdict_benchmark_rejects_bad_shapes():
    from benchmarks.semi_structured import main

    with pytest.raises(SystemExit):
        main(["--nk", "4096"])


# ---------------------------------------------------------------- GPT-2's Conv1D (weight stored (in, out))
def conv1d_2_4_along_inputs(nx: int, nf: int, seed: int = 0) -> nn.Module:
    """A transformers Conv1D pruned as docs/export-and-checkpoints.md says: (4, 1) blocks, 2 zeros each, level 1.0."""
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D  # in the dev extra; a GPU machine may lack it

    layer = Conv1D(nf, nx)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(nx, nf, generator=torch.Generator().manual_seed(seed)))
        kernels.sparsify(layer.weight, 1.0, (4, 1), 2, inplace=True)
    return layer


class FakeSemiStructured:
    """Stands in for torch's semi-structured class on a CPU: from_dense keeps the dense weight."""

    @staticmethod
    def from_dense(t: torch.Tensor) -> torch.Tensor:
        return t.clone()


def test_conv1d_pruned_along_inputs_is_2_4_and_says_why_it_stays_dense_on_cpu():
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D

    model = nn.Sequential(conv1d_2_4_along_inputs(64, 32), nn.ReLU())
    assert is_n_m_sparse(model[0].weight.t()) and not is_n_m_sparse(model[0].weight)
    report = to_semi_structured(model)
    assert [(r.name, r.shape, r.is_2_4, r.exported) for r in report] == [("0", (64, 32), True, False)]
    assert report[0].reason.startswith("device cpu")
    assert isinstance(model[0], Conv1D)  # nothing changed on a CPU


def test_conv1d_pruned_along_rows_is_refused_by_name_with_the_block_shape_to_use():
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D

    layer = Conv1D(32, 64)
    with torch.no_grad():
        kernels.sparsify(layer.weight, 1.0, (1, 4), 2, inplace=True)  # 2:4 along the output dimension
    report = to_semi_structured(nn.Sequential(layer))
    assert not report[0].is_2_4 and not report[0].exported
    assert report[0].reason.startswith("not 2:4: it is 2:4 along its rows, the output dimension")
    assert "sparse_block_shape=(4, 1), zeros_per_block=2" in report[0].reason
    dense = to_semi_structured(nn.Sequential(Conv1D(32, 64)))[0].reason
    assert dense.startswith("not 2:4: 512 of 512 groups of 4 hold more than 2 nonzeros (Conv1D stores")


def test_conv1d_masks_are_read_in_the_stored_shape():
    layer = conv1d_2_4_along_inputs(64, 32)
    keep = layer.weight != 0
    assert to_semi_structured(nn.Sequential(layer), {"0.weight": keep})[0].is_2_4
    wrong = to_semi_structured(nn.Sequential(layer), {"0": keep.t()})[0].reason
    assert wrong == "not 2:4: mask must have the weight's shape (64, 32); got (32, 64)"


def test_gpt2_conv1d_layers_are_listed_not_skipped():
    transformers = pytest.importorskip("transformers")
    GPT2Config, GPT2LMHeadModel = transformers.GPT2Config, transformers.GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    names = [r.name for r in to_semi_structured(model, dry_run=True)]
    assert names == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc",
                     "transformer.h.0.mlp.c_proj", "lm_head"]


def test_conv1d_export_swaps_in_an_equivalent_linear(monkeypatch):
    """The swap itself, with the hardware check passed and a stand-in for the sparse class
    (no sparse tensor cores here): the new nn.Linear computes what the Conv1D computed."""
    import blocksparsity.export as export
    monkeypatch.setattr(export, "hardware_reason", lambda *args: None)
    monkeypatch.setattr(export, "_backend", lambda: ("fake", FakeSemiStructured))
    block = nn.Sequential(conv1d_2_4_along_inputs(64, 32), nn.ReLU(), nn.Linear(32, 8))
    with torch.no_grad():
        block[0].bias.normal_()
        kernels.sparsify(block[2].weight, 1.0, (1, 4), 2, inplace=True)
    x = torch.randn(5, 64)
    expected = block(x)
    stored = block[0].weight.detach().clone()
    report = to_semi_structured(block)
    assert [(r.name, r.exported) for r in report] == [("0", True), ("2", True)]
    assert report[0].reason == "exported (fake) as nn.Linear, weight transposed"
    assert type(block[0]) is nn.Linear and (block[0].in_features, block[0].out_features) == (64, 32)
    assert torch.equal(block[0].weight, stored.t())
    torch.testing.assert_close(block(x), expected)
    alone = conv1d_2_4_along_inputs(64, 32)
    record = to_semi_structured(alone)[0]
    assert not record.exported and record.reason.endswith("pass its parent module")


@requires_cuda
@pytest.mark.cuda
def test_conv1d_exports_on_a_gpu():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("needs compute capability 8.0+")
    from torch.sparse import SparseSemiStructuredTensor

    block = nn.Sequential(conv1d_2_4_along_inputs(256, 128)).to("cuda", torch.bfloat16)
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    expected = block(x)
    report = to_semi_structured(block)
    assert report[0].exported, format_export_report(report)
    assert isinstance(block[0].weight, SparseSemiStructuredTensor)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=2e-2, atol=2e-2)
