"""``python -m blocksparsity.checkpoint IN OUT --level L [--block 1,4] [--zeros-per-block N]``

Sparsify a saved Lightning or plain state-dict checkpoint after training and write it in
the compact sparse format; report each tensor's sparsity and the bytes saved on disk.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from blocksparsity.checkpoint._api import read_checkpoint, save_sparse
from blocksparsity.checkpoint._files import same_file
from blocksparsity.checkpoint._format import CheckpointError, TensorRecord
from blocksparsity.checkpoint._prune import PruneRecord, sparsify_state_dict
from blocksparsity.kernels.validation import check_block_shape

# Lightning entries that only matter to resume training; a post-training checkpoint drops them.
TRAINING_STATE = ("optimizer_states", "lr_schedulers")


def _block(text: str) -> tuple[int, int]:
    """``ROWS,COLS`` as a block shape, by the kernels' rule (``check_block_shape``)."""
    not_two_ints = f"--block must be two ints as ROWS,COLS (e.g. 1,4); got {text!r}"
    try:
        bh, bw = check_block_shape(tuple(int(p) for p in text.split(",")))
    except TypeError:  # not two numbers
        raise argparse.ArgumentTypeError(not_two_ints) from None
    except ValueError as err:  # int() of something else, or a size below 1
        raise argparse.ArgumentTypeError(not_two_ints if "literal" in str(err) else f"--block: {err}") from None
    if max(bh, bw) >= 2**62:  # beyond any tensor (blocks are cut to the tensor), and int64 arithmetic
        raise argparse.ArgumentTypeError(f"--block must be below 2**62; got {text!r}")
    return bh, bw


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m blocksparsity.checkpoint",
        description="Sparsify a saved checkpoint by block norm and write it compactly (values + bit-packed masks).",
    )
    p.add_argument("input", type=Path, help="a plain state dict or Lightning checkpoint (torch.save file)")
    p.add_argument("output", type=Path, help="where to write the sparse checkpoint (never the input)")
    p.add_argument("--level", type=float, required=True, metavar="L", help="fraction of blocks to prune per tensor, 0 to 1")
    p.add_argument("--block", type=_block, default=(1, 4), metavar="ROWS,COLS", help="block shape (default 1,4)")
    p.add_argument("--zeros-per-block", type=int, default=None, metavar="N", help="zeros in each pruned block (default: all)")
    p.add_argument("--norm", choices=("L1", "L2"), default="L1", help="block score (default L1)")
    p.add_argument("--min-ndim", type=int, default=2, metavar="N", help="prune only tensors of N+ dims (default 2)")
    p.add_argument("--min-numel", type=int, default=1024, metavar="N", help="prune only tensors of N+ elements (default 1024)")
    p.add_argument("--include", action="append", default=None, metavar="GLOB", help="prune only names matching (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="never prune names matching (repeatable)")
    p.add_argument("--key", default=None, metavar="NAME", help="entry holding the state dict (default: 'state_dict' or the file)")
    p.add_argument("--keep-optimizer", action="store_true", help="keep Lightning's optimizer and LR-scheduler states")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists (never the input)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _mib(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:,.2f} MiB"
    return f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} B"


def format_report(pruned: list[PruneRecord], stored: list[TensorRecord]) -> str:
    """Per-tensor table: zeros before and after, how it was stored, and its bytes."""
    by_name = {r.name: r for r in stored}
    rows = [("tensor", "shape", "dtype", "zeros", "stored as", "dense", "on disk", "")]
    for r in pruned:
        s = by_name.get(r.name)
        zeros = f"{r.zeros_before:6.1%} -> {r.zeros_after:6.1%}" if r.pruned else f"{r.zeros_after:6.1%}"
        note = "" if r.pruned else f"(kept: {r.reason})"
        shape = "x".join(map(str, r.shape)) or "scalar"
        kind, dense, disk = (s.kind, _mib(s.dense_bytes), _mib(s.stored_bytes)) if s else ("?", "", "")
        rows.append((r.name, shape, r.dtype, zeros, kind, dense, disk, note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {5, 6}
    return "\n".join(
        "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    )


def run(args: argparse.Namespace) -> int:
    if not args.input.is_file():
        raise CheckpointError(f"{args.input}: no such file")
    if same_file(args.input, args.output):
        raise CheckpointError(f"refusing to write {args.output}: it is the input file")
    if args.output.is_dir():
        raise CheckpointError(f"{args.output} is a directory; name the file to write")
    if args.output.exists() and not args.force:
        raise CheckpointError(f"{args.output} exists; pass --force to replace it")
    progress = not args.no_progress and sys.stderr.isatty()

    state_dict, extra, kind = read_checkpoint(args.input, key=args.key)
    dropped = [k for k in TRAINING_STATE if k in extra] if kind == "lightning" and not args.keep_optimizer else []
    extra = {k: v for k, v in extra.items() if k not in dropped}
    pruned, prune_records = sparsify_state_dict(
        state_dict, args.level, args.block, args.zeros_per_block, args.norm,
        min_ndim=args.min_ndim, min_numel=args.min_numel, include=args.include or ["*"], exclude=args.exclude,
        progress=progress,
    )
    stored = save_sparse(pruned, args.output, block_shape=args.block, extra=extra, progress=progress)

    print(f"{args.input} ({kind}, {len(state_dict)} entries) -> {args.output}")
    print(format_report(prune_records, stored))
    n_pruned = sum(r.pruned for r in prune_records)
    dense = sum(r.dense_bytes for r in stored)
    on_disk = sum(r.stored_bytes for r in stored)
    size_in, size_out = args.input.stat().st_size, args.output.stat().st_size
    print(f"pruned {n_pruned} of {len(prune_records)} tensors (level {args.level}, block {args.block[0]}x{args.block[1]})")
    if dropped:
        print(f"dropped training state: {', '.join(dropped)} (keep with --keep-optimizer)")
    print(f"tensor payload: {_mib(dense)} dense -> {_mib(on_disk)} stored ({on_disk / max(dense, 1):.3f}x)")
    print(f"file: {_mib(size_in)} -> {_mib(size_out)} ({size_out / size_in:.3f}x), saved {_mib(max(size_in - size_out, 0))}")
    return 0


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that cleanup (the temporary file) runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _os_error(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m blocksparsity.checkpoint``; returns the exit status.

    Errors print one ``error:`` line (no traceback) and return 1; SIGINT and SIGTERM stop the
    run, remove the temporary output and return 130 / 143. No partial output is left."""
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    try:
        return run(args)
    except (CheckpointError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # read-only directory, full disk, ...
        print(f"error: {_os_error(err)}", file=sys.stderr)
        return 1
    except (MemoryError, torch.OutOfMemoryError) as err:
        print(f"error: out of memory ({str(err).splitlines()[0] if str(err) else 'MemoryError'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no output written", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated (SIGTERM); no output written", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread() and os.name == "posix"
