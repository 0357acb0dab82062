"""Compact sparse checkpoints: exact round trips, bytes on disk, safe loading of untrusted
files, post-training sparsification of a state dict, and the command line."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from blocksparsity import kernels
from blocksparsity.checkpoint import (
    FORMAT_NAME,
    CheckpointError,
    load_sparse,
    load_sparse_checkpoint,
    read_checkpoint,
    save_sparse,
    sparsify_state_dict,
)
from blocksparsity.checkpoint._bits import pack_bits, unpack_bits
from blocksparsity.checkpoint._cli import main
from blocksparsity.checkpoint._format import decode_entry, encode_tensor

ROOT = Path(__file__).resolve().parents[2]
INT_VIEW = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns, so -0.0 != 0.0 and NaN payloads count."""
    return t.contiguous().view(INT_VIEW[t.dtype]) if t.dtype in INT_VIEW else t


def assert_same_bits(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name, t in expected.items():
        if not isinstance(t, torch.Tensor):
            assert got[name] == t, name
            continue
        assert got[name].dtype == t.dtype and got[name].shape == t.shape, name
        assert torch.equal(bits(got[name]), bits(t)), name


def roundtrip(state_dict: dict, tmp_path: Path, **kwargs) -> tuple[dict, list]:
    path = tmp_path / "sparse.pt"
    records = save_sparse(state_dict, path, **kwargs)
    return load_sparse(path), records


def rand(*shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ---------------------------------------------------------------- exact round trips
def test_bit_packing_roundtrip():
    for n in (0, 1, 7, 8, 9, 1000):
        b = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5
        packed = pack_bits(b)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8)
        assert torch.equal(unpack_bits(packed, n), b)
    assert pack_bits(torch.tensor([True, False, False, False, False, False, False, False, True])).tolist() == [1, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(7, 13), (5,), (3, 5, 7), (33, 9), (1, 1), (64, 64)])
@pytest.mark.parametrize("block", [(1, 4), (2, 3), (4, 4)])
def test_roundtrip_is_bit_exact(tmp_path, dtype, shape, block):
    x = rand(*shape, dtype=dtype)

    def sparsify(level, bs, zpb=None):  # the kernels score float32 data; float64 is masked with its mask
        return x * kernels.block_mask(x.float(), level, bs, zpb)  # -0.0 where negatives were pruned

    state = {
        "random": x,
        "block_sparse": sparsify(0.5, block),
        "two_four": sparsify(1.0, (1, 4), 2) if shape[-1] >= 4 else x,
        "zeros": torch.zeros(shape, dtype=dtype),
        "neg_zeros": torch.full(shape, -0.0, dtype=dtype),
    }
    odd = sparsify(0.7, block).clone()
    odd.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0], dtype=dtype)[: odd.numel()]
    state["odd"] = odd
    got, _ = roundtrip(state, tmp_path, block_shape=block)
    assert_same_bits(got, state)
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in got.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7, 13), (5,), (3, 5, 7), (33, 9)])
@pytest.mark.parametrize("block", [(1, 4), (2, 3), (4, 4)])
def test_every_encoding_is_exact_on_awkward_shapes(dtype, shape, block):
    x = rand(*shape, dtype=dtype)
    for t in (x, kernels.sparsify(x, 0.5, block)[0], kernels.sparsify(x, 0.8, block, 1)[0], torch.full(shape, -0.0, dtype=dtype)):
        signed_zeros = bool(torch.signbit(t[t == 0]).any())
        for kind in ("dense", "bitmap", "blocks"):
            entry, _, _ = encode_tensor(t, block, kind)
            assert entry["kind"] == kind and ("neg_zero_bits" in entry) == (signed_zeros and kind != "dense")
            assert torch.equal(bits(decode_entry("t", entry, {})), bits(t)), kind


def test_encodings_chosen_by_size(tmp_path):
    x = rand(256, 256)
    state = {
        "random": x,
        "blocks": kernels.sparsify(x, 0.5, (1, 4))[0],
        "two_four": kernels.sparsify(x, 1.0, (1, 4), 2)[0],
        "ints": torch.arange(10),
        "flag": torch.tensor(True),
        "step": torch.tensor(3),
    }
    got, records = roundtrip(state, tmp_path)
    assert [r.kind for r in records] == ["dense", "blocks", "bitmap", "dense", "dense", "dense"]
    assert_same_bits(got, state)
    assert records[1].zeros == pytest.approx(0.5) and records[0].zeros == 0.0
    assert records[1].stored_bytes < 0.55 * records[1].dense_bytes
    assert records[1].dense_bytes == 256 * 256 * 4


def test_model_roundtrip_with_embeddings_buffers_and_tied_weights(tmp_path):
    torch.manual_seed(0)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(101, 24)  # sizes not multiples of 8
            self.conv = nn.Conv1d(24, 12, 3)
            self.norm = nn.BatchNorm1d(12)
            self.head = nn.Linear(24, 101, bias=False)
            self.head.weight = self.emb.weight  # tied

    model = LM()
    with torch.no_grad():
        for p in (model.emb.weight, model.conv.weight):
            kernels.sparsify(p, 0.5, (1, 4), inplace=True)
    model.norm.num_batches_tracked += 5
    state = model.state_dict()
    got, records = roundtrip(state, tmp_path)
    assert_same_bits(got, state)
    assert got["head.weight"] is got["emb.weight"]
    assert {r.name: r.kind for r in records}["head.weight"] == "alias"
    fresh = LM()
    fresh.load_state_dict(got)
    assert_same_bits(fresh.state_dict(), state)


def test_views_are_saved_without_their_base(tmp_path):
    big = rand(1000, 256)
    view = kernels.sparsify(big, 0.5)[0][:10]
    save_sparse({"view": view, "dense_view": big[:10]}, tmp_path / "v.pt")
    assert (tmp_path / "v.pt").stat().st_size < 30_000  # not the 1 MB base storage
    assert_same_bits(load_sparse(tmp_path / "v.pt"), {"view": view, "dense_view": big[:10]})


def test_extra_entries_and_lightning_shape(tmp_path):
    path = tmp_path / "s.pt"
    save_sparse({"w": rand(8, 8)}, path, extra={"hyper_parameters": {"lr": 0.1}, "epoch": 3})
    ckpt = load_sparse_checkpoint(path)
    assert set(ckpt) == {"state_dict", "hyper_parameters", "epoch"} and ckpt["hyper_parameters"] == {"lr": 0.1}
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT_NAME and raw["version"] == 2


# ---------------------------------------------------------------- bytes on disk
def model_state(dtype=torch.float32) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(2000, 128), nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 128)).to(dtype)
    return model.state_dict()


def file_ratio(tmp_path: Path, dense: dict, sparse: dict) -> float:
    torch.save(dense, tmp_path / "dense.pt")
    save_sparse(sparse, tmp_path / "sparse.pt")
    return (tmp_path / "sparse.pt").stat().st_size / (tmp_path / "dense.pt").stat().st_size


def test_half_block_sparse_fp32_model_takes_at_most_055x(tmp_path):
    dense = model_state()
    pruned, _ = sparsify_state_dict(dense, 0.5, (1, 4))  # +0.0 zeros
    masked = {k: kernels.sparsify(v, 0.5)[0] if v.dim() == 2 else v for k, v in dense.items()}  # -0.0 zeros too
    pruned_dense = {k: v.clone() for k, v in pruned.items()}
    assert file_ratio(tmp_path, pruned_dense, pruned) <= 0.52
    assert file_ratio(tmp_path, masked, masked) <= 0.54


def test_two_four_bf16_model_bytes(tmp_path):
    dense = model_state(torch.bfloat16)
    pruned, _ = sparsify_state_dict(dense, 1.0, (1, 4), 2)
    assert file_ratio(tmp_path, pruned, pruned) <= 0.57  # half the values + 1 bit an element


# ---------------------------------------------------------------- untrusted files
class Payload:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(4, 4)}, "hyper_parameters": Payload(marker)}, evil)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"w": Payload(marker)}, protocol=2))
    for path in (evil, raw):
        for load in (load_sparse, read_checkpoint):
            with pytest.raises(CheckpointError, match=r"refused|not a readable"):
                load(path)
        assert main([str(path), str(tmp_path / "out.pt"), "--level", "0.5"]) == 1
        assert not marker.exists() and not (tmp_path / "out.pt").exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_lightning_extras_that_need_unpickling_are_refused_by_name(tmp_path, capsys):
    import argparse

    ckpt = lightning_checkpoint({"w": rand(64, 64)})
    ckpt["hyper_parameters"] = argparse.Namespace(lr=0.1)
    torch.save(ckpt, tmp_path / "ns.ckpt")
    assert main([str(tmp_path / "ns.ckpt"), str(tmp_path / "out.pt"), "--level", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "refused: its pickle asks for argparse.Namespace, which is not a tensor or a plain container" in err
    assert "torch.save(ckpt['state_dict'], 'weights.pt')" in err


def test_bad_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_sparse({"w": kernels.sparsify(rand(64, 64), 0.5)[0]}, good)
    data = good.read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], "cannot load it"),
        "empty.pt": (b"", "empty"),
        "text.pt": (b"hello, this is not a checkpoint\n", "not a readable torch checkpoint|cannot load it"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_sparse(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such file"):
        load_sparse(tmp_path / "missing.pt")


def test_foreign_and_future_files_are_refused(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name in ("plain.pt", "list.pt"):
        with pytest.raises(CheckpointError, match="not a blocksparse sparse checkpoint"):
            load_sparse(tmp_path / name)
    torch.save({"format": FORMAT_NAME, "version": 3, "tensors": {}, "extra": {}}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 3 is not supported"):
        load_sparse(tmp_path / "future.pt")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("bits", torch.zeros(3, dtype=torch.uint8), "bits holds 3 bytes, expected 8"),
        ("bits", torch.zeros(8, dtype=torch.int64), "bits must be 1-D uint8"),
        ("values", torch.zeros(5), "5 values for 32 stored elements"),
        ("shape", [-1, 8], "shape must be a list of sizes"),
        ("kind", "zstd", "unknown kind 'zstd'"),
    ],
)
@pytest.mark.filterwarnings("ignore::blocksparsity.checkpoint.UncheckedCheckpointWarning")  # a version 1 entry
def test_corrupt_entries_are_refused(tmp_path, field, value, message):
    x = torch.zeros(8, 8)
    x[:, :4] = 1.0
    torch.save({"format": FORMAT_NAME, "version": 1, "extra": {}, "tensors": {"w": {
        "kind": "bitmap", "shape": [8, 8], "values": torch.ones(32), "bits": pack_bits((x != 0).reshape(-1)), field: value,
    }}}, tmp_path / "c.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match=f"tensor 'w': {message}"):
        load_sparse(tmp_path / "c.pt")


def test_save_argument_checks_and_atomic_failure(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="state_dict"):
        save_sparse([torch.ones(2)], tmp_path / "a.pt")
    with pytest.raises(ValueError, match="block_shape"):
        save_sparse({"w": torch.ones(2)}, tmp_path / "a.pt", block_shape=(0, 4))
    with pytest.raises(TypeError, match="extra"):
        save_sparse({"w": torch.ones(2)}, tmp_path / "a.pt", extra=[1])
    target = tmp_path / "keep.pt"
    target.write_bytes(b"old")

    def broken_save(obj, f):
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_sparse({"w": torch.ones(2)}, target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.pt"]


# ---------------------------------------------------------------- post-training sparsification
def test_sparsify_state_dict_eligibility_and_zeros():
    state = {
        "emb.weight": rand(300, 16),
        "fc.weight": rand(64, 32, seed=1),
        "fc.bias": rand(64),
        "tiny.weight": rand(4, 8),
        "head.weight": rand(64, 32, seed=2),
        "steps": torch.tensor(7),
        "ids": torch.arange(2048).reshape(32, 64),
    }
    state["tied.weight"] = state["fc.weight"]
    before = {k: v.clone() for k, v in state.items()}
    out, records = sparsify_state_dict(state, 0.5, (1, 4), min_numel=1024, exclude=["head.*"])
    why = {r.name: (r.pruned, r.reason) for r in records}
    assert why == {
        "emb.weight": (True, "pruned"),
        "fc.weight": (True, "pruned"),
        "fc.bias": (False, "1-D < min_ndim 2"),
        "tiny.weight": (False, "32 elements < min_numel 1024"),
        "head.weight": (False, "excluded"),
        "steps": (False, "dtype int64"),
        "ids": (False, "dtype int64"),
        "tied.weight": (True, "pruned"),
    }
    assert_same_bits(state, before)  # the input is not modified
    assert out["tied.weight"] is out["fc.weight"] and out["fc.bias"] is state["fc.bias"]
    for name in ("emb.weight", "fc.weight"):
        assert torch.equal(out[name], kernels.sparsify(state[name], 0.5)[0])
        assert not torch.signbit(out[name][out[name] == 0]).any()  # pruned elements are +0.0
        assert {r.name: r.zeros_after for r in records}[name] == pytest.approx(0.5)
    only, _ = sparsify_state_dict(state, 0.5, include=["emb.*"])
    assert [k for k in state if only[k] is not state[k]] == ["emb.weight"]


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"sparsity_level": 1.5}, ValueError, "sparsity_level"),
        ({"block_shape": (1, 0)}, ValueError, "block_shape"),
        ({"zeros_per_block": 5}, ValueError, "zeros_per_block"),
        ({"norm": "L3"}, ValueError, "norm"),
        ({"min_ndim": 0}, ValueError, "min_ndim"),
        ({"min_numel": -1}, ValueError, "min_numel"),
        ({"include": "*.weight"}, TypeError, "include"),
        ({"state_dict": [1]}, TypeError, "state_dict"),
    ],
)
def test_sparsify_state_dict_bad_arguments(kwargs, error, name):
    state = {"w": rand(64, 64)}
    before = state["w"].clone()
    with pytest.raises(error, match=name):
        sparsify_state_dict(**{"state_dict": state, "sparsity_level": 0.5, **kwargs})
    assert torch.equal(state["w"], before)


def test_nonfinite_tensor_is_named():
    bad = rand(64, 64)
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"tensor 'layer\.weight': x holds NaN"):
        sparsify_state_dict({"ok": rand(64, 64), "layer.weight": bad}, 0.5)


# ---------------------------------------------------------------- the command line
def lightning_checkpoint(state: dict) -> dict:
    """A Lightning checkpoint's entries, as Trainer.save_checkpoint writes them."""
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "kth_value": torch.tensor(float("inf"))}},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(512, 128), "exp_avg_sq": torch.ones(512, 128)}},
                              "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"hidden": 512, "lr": 0.1},
    }  # fmt: skip


def test_cli_sparsifies_a_lightning_checkpoint(tmp_path, capsys):
    state = model_state()
    torch.save(lightning_checkpoint(state), tmp_path / "in.ckpt")
    assert main([str(tmp_path / "in.ckpt"), str(tmp_path / "out.pt"), "--level", "0.5", "--block", "1,4"]) == 0
    out = capsys.readouterr().out
    assert "(lightning, 5 entries)" in out and "dropped training state: optimizer_states, lr_schedulers" in out
    rows = {line.split()[0]: " ".join(line.split()) for line in out.splitlines()}
    assert rows["0.weight"] == "0.weight 2000x128 float32 0.0% -> 50.0% blocks 1000.0 KiB 511.7 KiB"
    assert rows["1.bias"] == "1.bias 512 float32 0.0% dense 2.0 KiB 2.0 KiB (kept: 1-D < min_ndim 2)"
    assert "pruned 3 of 5 tensors (level 0.5, block 1x4)" in out and "file:" in out
    ckpt = load_sparse_checkpoint(tmp_path / "out.pt")
    assert ckpt["hyper_parameters"] == {"hidden": 512, "lr": 0.1} and ckpt["epoch"] == 3
    assert "optimizer_states" not in ckpt and set(ckpt["state_dict"]) == set(state)
    expected, _ = sparsify_state_dict(state, 0.5)
    assert_same_bits(ckpt["state_dict"], expected)

    assert main([str(tmp_path / "in.ckpt"), str(tmp_path / "kept.pt"), "--level", "0.5", "--keep-optimizer"]) == 0
    kept = load_sparse_checkpoint(tmp_path / "kept.pt")["optimizer_states"]
    assert torch.equal(kept[0]["state"][0]["exp_avg"], torch.ones(512, 128))


def test_cli_plain_state_dict_two_four(tmp_path, capsys):
    state = model_state(torch.bfloat16)
    torch.save(state, tmp_path / "in.pt")
    args = [str(tmp_path / "in.pt"), str(tmp_path / "out.pt"), "--level", "1.0", "--zeros-per-block", "2", "--no-progress"]
    assert main(args) == 0
    assert "(state_dict, 5 entries)" in capsys.readouterr().out
    got = load_sparse(tmp_path / "out.pt")
    from blocksparsity.export import is_n_m_sparse

    assert is_n_m_sparse(got["1.weight"]) and is_n_m_sparse(got["0.weight"]) and torch.equal(got["1.bias"], state["1.bias"])


def test_cli_never_overwrites_its_input(tmp_path, capsys):
    src = tmp_path / "in.pt"
    torch.save({"w": rand(64, 64)}, src)
    data = src.read_bytes()
    (tmp_path / "link.pt").symlink_to(src)
    os.link(src, tmp_path / "hard.pt")
    for out in (src, tmp_path / "link.pt", tmp_path / "hard.pt", tmp_path / "." / "in.pt"):
        assert main([str(src), str(out), "--level", "0.5", "--force"]) == 1
        assert "it is the input file" in capsys.readouterr().err
    assert src.read_bytes() == data
    (tmp_path / "exists.pt").write_bytes(b"x")
    assert main([str(src), str(tmp_path / "exists.pt"), "--level", "0.5"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([str(src), str(tmp_path / "exists.pt"), "--level", "0.5", "--force"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.pt", "hard.pt", "in.pt", "link.pt"]  # no temp files


def test_cli_refuses_bad_input(tmp_path, capsys):
    torch.save({"w": rand(64, 64)}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 3])
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"model": {"w": rand(4, 4)}, "step": 3}, tmp_path / "nested.pt")
    nan = rand(64, 64)
    nan[0, 0] = float("nan")
    torch.save({"layer.weight": nan}, tmp_path / "nan.pt")
    out = tmp_path / "out.pt"
    for name, message in [
        ("missing.pt", "no such file"),
        ("truncated.pt", "cannot load it"),
        ("list.pt", "expected a checkpoint dict; the file holds a list"),
        ("nested.pt", "no state dict found"),
        ("nan.pt", "tensor 'layer.weight': x holds NaN"),
    ]:
        assert main([str(tmp_path / name), str(out), "--level", "0.5"]) == 1, name
        assert message in capsys.readouterr().err, name
        assert not out.exists()
    assert main([str(tmp_path / "nested.pt"), str(out), "--level", "0.5", "--key", "model", "--min-numel", "0"]) == 0
    assert main([str(tmp_path / "good.pt"), str(tmp_path / "o2.pt"), "--level", "1.5"]) == 1
    assert "sparsity_level must be between 0 and 1" in capsys.readouterr().err
    assert main([str(tmp_path / "good.pt"), str(tmp_path / "o2.pt"), "--level", "0.5", "--zeros-per-block", "5"]) == 1
    assert "zeros_per_block" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "good.pt"), str(tmp_path / "o2.pt"), "--level", "0.5", "--block", "1x4"])
    assert "--block must be two ints" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    torch.save({"w": rand(64, 64)}, tmp_path / "in.pt")
    done = subprocess.run(
        [sys.executable, "-m", "blocksparsity.checkpoint", str(tmp_path / "in.pt"), str(tmp_path / "out.pt"), "--level", "0.5"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ["w", "64x64", "float32", "0.0%", "->", "50.0%"] in [line.split()[:6] for line in done.stdout.splitlines()]
    assert load_sparse(tmp_path / "out.pt")["w"].eq(0).float().mean().item() == 0.5


def test_read_checkpoint_kinds(tmp_path):
    state = {"w": rand(8, 8)}
    torch.save(state, tmp_path / "a.pt")
    torch.save(lightning_checkpoint(state), tmp_path / "b.ckpt")
    save_sparse(state, tmp_path / "c.pt")
    assert [read_checkpoint(tmp_path / n)[2] for n in ("a.pt", "b.ckpt", "c.pt")] == ["state_dict", "lightning", "sparse"]


def test_sparsify_state_dict_keeps_float64_with_its_reason():
    from blocksparsity.checkpoint import sparsify_state_dict

    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    state = {"w64": w.double(), "w32": w.clone()}
    out, records = sparsify_state_dict(state, 0.5)
    why = {r.name: (r.pruned, r.reason) for r in records}
    assert why["w64"] == (False, "dtype float64 (scores are float32: cast to float32 to prune it)")
    assert out["w64"] is state["w64"] and why["w32"] == (True, "pruned")
