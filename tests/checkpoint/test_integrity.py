"""Untrusted sparse checkpoints (issue 14): corruption is detected (SHA-256 per entry, sizes
checked against the bytes stored), a tiny file cannot demand gigabytes, messages say what
a file is, and the command line fails with one line and no leftovers."""

from __future__ import annotations

import argparse
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.checkpoint import (
    CheckpointError,
    UncheckedCheckpointWarning,
    default_max_bytes,
    load_sparse,
    load_sparse_checkpoint,
    read_checkpoint,
    save_sparse,
)
from blocksparsity.checkpoint._cli import main
from blocksparsity.checkpoint._files import remove_stale_temporaries
from blocksparsity.checkpoint._format import digest, make_payload

ROOT = Path(__file__).resolve().parents[2]
V1_FIXTURE = ROOT / "tests" / "data" / "sparse_checkpoint_v1.pt"
BITS = {torch.float32: torch.int32, torch.int64: torch.int64}  # compare bit patterns: -0.0 != 0.0


def same_bits(a: dict, b: dict) -> bool:
    def same(x, y):
        return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.view(BITS[x.dtype]), y.view(BITS[y.dtype]))
    return list(a) == list(b) and all(same(a[k], b[k]) for k in a)


def fixture_state() -> dict:
    """What tests/data/sparse_checkpoint_v1.pt holds (written by the version 1 code, block (4, 4))."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 64, generator=g)
    state = {"w": kernels.sparsify(x, 0.5, (4, 4))[0], "b": torch.randn(5, generator=g),
             "two_four": kernels.sparsify(x, 1.0, (1, 4), 2)[0],
             "odd": kernels.sparsify(torch.randn(65, 65, generator=g), 0.5, (4, 4))[0], "step": torch.tensor([3])}
    state["tied"] = state["w"]
    return state


def model_state() -> dict:
    return {k: v for k, v in fixture_state().items() if k != "tied"}


def rewrite(path: Path, edit) -> None:
    """Load a sparse file's payload as it is, edit it, save it back (checksums not renewed)."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


# ---------------------------------------------------------------- 1. integrity
def test_single_bit_flips_never_load_wrong_values(tmp_path):
    good = tmp_path / "good.pt"
    state = model_state()
    save_sparse(state, good)
    data = bytearray(good.read_bytes())
    rng = random.Random(0)
    outcomes = {"refused": 0, "identical": 0}
    for i in range(160):
        flipped = bytearray(data)
        pos = rng.randrange(len(data))
        flipped[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{i}.pt"
        path.write_bytes(bytes(flipped))
        try:
            got = load_sparse(path)
        except CheckpointError:
            outcomes["refused"] += 1
            continue
        assert same_bits(got, state), f"byte {pos}: a flip loaded different values"
        outcomes["identical"] += 1
    assert outcomes["refused"] > 80, outcomes


def test_flipped_value_bit_is_named(tmp_path):
    path = tmp_path / "s.pt"
    save_sparse(model_state(), path)

    def flip(payload):
        payload["tensors"]["w"]["values"][0] = payload["tensors"]["w"]["values"][0].neg()
    rewrite(path, flip)
    with pytest.raises(CheckpointError, match=r"tensor 'w': checksum mismatch"):
        load_sparse(path)


@pytest.mark.parametrize("field, value", [("shape", [32, 128]), ("shape", [4096]), ("block", [2, 8])])
def test_edited_layout_of_the_same_size_is_refused(tmp_path, field, value):
    path = tmp_path / "s.pt"
    records = save_sparse({"w": model_state()["w"]}, path, block_shape=(4, 4))
    assert records[0].kind == "blocks"
    rewrite(path, lambda p: p["tensors"]["w"].__setitem__(field, value))
    with pytest.raises(CheckpointError, match=r"tensor 'w': checksum mismatch"):
        load_sparse(path)


def test_edited_extra_is_refused(tmp_path):
    path = tmp_path / "s.pt"
    save_sparse(model_state(), path, extra={"epoch": 2})
    rewrite(path, lambda p: p["extra"].__setitem__("epoch", 3))
    with pytest.raises(CheckpointError, match="'extra' does not match its checksum"):
        load_sparse(path)


def test_version_1_file_loads_and_says_it_has_no_checksum():
    with pytest.warns(UncheckedCheckpointWarning, match="version 1 has no checksums"):
        got = load_sparse_checkpoint(V1_FIXTURE)
    assert same_bits(got["state_dict"], fixture_state()) and got["state_dict"]["tied"] is got["state_dict"]["w"]
    assert got["epoch"] == 2


@pytest.mark.filterwarnings("ignore::blocksparsity.checkpoint.UncheckedCheckpointWarning")
def test_version_1_layout_edits_that_disagree_with_the_stored_sizes_are_refused(tmp_path):
    """Without checksums, sizes still have to agree: 64x64 cut to 30x128 keeps the 256 block
    bits but puts whole stored blocks beyond the tensor; bits set past the last entry."""
    path = tmp_path / "v1.pt"
    path.write_bytes(V1_FIXTURE.read_bytes())
    rewrite(path, lambda p: p["tensors"]["w"].__setitem__("shape", [30, 128]))
    with pytest.raises(CheckpointError, match=r"tensor 'w': a whole stored block reaches beyond the tensor"):
        load_sparse(path)
    path.write_bytes(V1_FIXTURE.read_bytes())

    def set_tail_bit(p):
        p["tensors"]["odd"]["block_bits"][-1] |= 0x80  # 17 x 17 = 289 blocks: the last byte holds 1
    rewrite(path, set_tail_bit)
    with pytest.raises(CheckpointError, match=r"tensor 'odd': block_bits has bits set beyond its 289 entries"):
        load_sparse(path)


# ---------------------------------------------------------------- 2. size bounds
def _crafted(path: Path, shape: list[int], block: list[int]) -> None:
    """A valid (checksummed) blocks entry of one empty block: a few bytes declaring zeros."""
    entry = {"kind": "blocks", "shape": shape, "values": torch.zeros(0), "block": block,
             "block_bits": torch.zeros(1, dtype=torch.uint8), "partial_bits": torch.zeros(0, dtype=torch.uint8),
             "elem_bits": torch.zeros(0, dtype=torch.uint8)}
    torch.save(make_payload({"huge": entry}, {}), path)


@pytest.mark.parametrize("side", [20000, 100000])
def test_tiny_file_declaring_gigabytes_is_refused_before_allocating(tmp_path, side):
    path = tmp_path / "bomb.pt"
    _crafted(path, [side, side], [side, side])
    assert path.stat().st_size < 4096
    for load in (load_sparse, read_checkpoint):
        with pytest.raises(CheckpointError, match=r"refused: tensor 'huge' declares shape .* exceeds max_bytes=1,073,741,824"):
            load(path)


def test_max_bytes_can_be_raised_and_lowered(tmp_path):
    path = tmp_path / "zeros.pt"
    _crafted(path, [3000, 3000], [3000, 3000])
    assert default_max_bytes(path) == 1 << 30
    assert torch.equal(load_sparse(path)["huge"], torch.zeros(3000, 3000))
    with pytest.raises(CheckpointError, match="exceeds max_bytes=1,000,000"):
        load_sparse(path, max_bytes=10**6)
    ok = tmp_path / "ok.pt"
    save_sparse(model_state(), ok)
    assert same_bits(load_sparse(ok, max_bytes=10**6), model_state())
    with pytest.raises(TypeError, match="max_bytes"):
        load_sparse(ok, max_bytes=1.5)
    with pytest.raises(ValueError, match="max_bytes"):
        read_checkpoint(ok, max_bytes=-1)


# ---------------------------------------------------------------- 8. messages, and refusing at save time
class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-should-never-run",))


def test_messages_say_what_the_file_is(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"w": RunsCode()}, evil)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"w": RunsCode()}, protocol=2))
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random.Random(1).randbytes(3000))
    for path in (evil, raw):
        with pytest.raises(CheckpointError, match=r"refused: this file asks to run code \(os\.system\)") as info:
            load_sparse(path)
        assert "weights_only=False" not in str(info.value)
    with pytest.raises(CheckpointError, match=r"noise\.bin: not a checkpoint") as info:
        load_sparse(noise)
    assert "asks for" not in str(info.value) and "weights_only=False" not in str(info.value)


def test_save_refuses_what_load_would_refuse(tmp_path):
    path = tmp_path / "s.pt"
    with pytest.raises(TypeError, match=r"extra\['hyper_parameters'\] cannot be saved: load_sparse .*a Namespace"):
        save_sparse(model_state(), path, extra={"hyper_parameters": argparse.Namespace(lr=0.1), "epoch": 1})
    with pytest.raises(TypeError, match=r"state_dict\['_extra_state'\] cannot be saved"):
        save_sparse({**model_state(), "_extra_state": argparse.Namespace()}, path)
    assert list(tmp_path.iterdir()) == []
    save_sparse(model_state(), path, extra={"hyper_parameters": {"lr": 0.1, "dims": [1, 2], "name": "x"}})
    assert load_sparse_checkpoint(path)["hyper_parameters"] == {"lr": 0.1, "dims": [1, 2], "name": "x"}


def test_digest_is_canonical():
    a = {"x": torch.arange(4.0), "n": [1, 2.0, "s", None, True]}
    assert digest(a) == digest({"x": torch.arange(4.0), "n": [1, 2.0, "s", None, True]})
    assert digest(a) != digest({"x": torch.arange(4.0).reshape(2, 2), "n": [1, 2.0, "s", None, True]})
    assert digest([1]) != digest([True]) and digest([1.0]) != digest([1]) and digest(-0.0) != digest(0.0)


# ---------------------------------------------------------------- 7. the command line
def _input(tmp_path: Path) -> Path:
    path = tmp_path / "in.pt"
    torch.save({"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(0))}, path)
    return path


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_cli_disk_errors_print_one_line(tmp_path, capsys, monkeypatch):
    src = _input(tmp_path)
    out = tmp_path / "out.pt"

    def full_disk(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    assert main([str(src), str(out), "--level", "0.5", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "No space left on device" in err
    assert "Traceback" not in err and not out.exists() and _leftovers(tmp_path) == []


def test_cli_read_only_directory_prints_one_line(tmp_path, capsys, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # as a read-only directory answers (root ignores chmod)
    (tmp_path / "ro").mkdir()
    assert main([str(_input(tmp_path)), str(tmp_path / "ro" / "out.pt"), "--level", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'ro'}: Permission denied\n"


def test_cli_output_directory_with_force(tmp_path, capsys):
    (tmp_path / "outdir").mkdir()
    assert main([str(_input(tmp_path)), str(tmp_path / "outdir"), "--level", "0.5", "--force"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'outdir'} is a directory; name the file to write\n"
    assert (tmp_path / "outdir").is_dir() and list((tmp_path / "outdir").iterdir()) == []


def test_cli_absurd_blocks(tmp_path, capsys):
    src, out = _input(tmp_path), tmp_path / "out.pt"
    with pytest.raises(SystemExit) as info:
        main([str(src), str(out), "--level", "0.5", "--block", f"{10**30},1"])
    assert info.value.code == 2 and "--block must be below 2**62" in capsys.readouterr().err
    # Huge but representable: one block per tensor (it is cut to the tensor), quickly.
    assert main([str(src), str(out), "--level", "1.0", "--block", "100000,100000", "--min-numel", "1"]) == 0
    assert torch.equal(load_sparse(out)["w"], torch.zeros(64, 64))


def test_cli_sigterm_mid_write_leaves_nothing(tmp_path):
    """SIGTERM while the output is written: the temporary is removed, exit status 143."""
    src, out = _input(tmp_path), tmp_path / "out.pt"
    script = textwrap.dedent(f"""
        import sys, time, torch
        from blocksparsity.checkpoint._cli import main
        real_save = torch.save
        def slow_save(obj, f):
            real_save(obj, f)
            print("writing", flush=True)
            time.sleep(60)
        torch.save = slow_save
        sys.exit(main([{str(src)!r}, {str(out)!r}, "--level", "0.5", "--no-progress"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        assert proc.stdout.readline() == "writing\n"
        assert _leftovers(tmp_path) != []  # mid-write: the temporary exists
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143 and err == "error: terminated (SIGTERM); no output written\n"
    assert not out.exists() and _leftovers(tmp_path) == []


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    """SIGKILL cannot be handled: the next write next to the same output removes what a dead
    process left (by the pid in the name); a live process's temporary stays."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    out = tmp_path / "out.pt"
    stale = tmp_path / f".out.pt.blocksparse-tmp-{dead_pid}.abc123.tmp"
    live = tmp_path / f".out.pt.blocksparse-tmp-{os.getppid()}.def456.tmp"
    other = tmp_path / ".other.pt.blocksparse-tmp-1.x.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"half")
    save_sparse(model_state(), out)
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(out) == []
