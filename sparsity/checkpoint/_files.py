"""Files: load untrusted checkpoints without unpickling arbitrary objects, write atomically,
and never write over an input.

Checkpoints are untrusted input: a pickle can run any code while it loads. Everything here
loads with ``torch.load(..., weights_only=True)``, whose unpickler builds only tensors,
primitive types and containers and refuses every other global without calling it.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sparsity.checkpoint._format import CheckpointError

PathLike = str | os.PathLike


def _unsupported_global(err: BaseException) -> str | None:
    """What torch's weights_only unpickler refused to build ('argparse.Namespace'), if it says."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if found:
        return found.group(1).rstrip(".")
    found = re.search(r"Unsupported operand [^\n.]*", str(err))
    return f"a pickle instruction it does not allow ({found.group(0)})" if found else None


def load_untrusted(path: PathLike, *, mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with errors that say what is
    wrong with the file. ``mmap=True`` maps the tensors of a zip-format file from disk instead
    of reading them into memory (a large checkpoint costs memory only as it is read).

    Raises ``CheckpointError`` (a ``ValueError``) for a missing, empty, truncated or foreign
    file, and for a pickle that needs objects other than tensors and plain containers (such a
    pickle is refused before any of its code runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    is_zip = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as err:
        refused = _unsupported_global(err)
        if refused is not None:
            raise CheckpointError(
                f"{path}: refused: its pickle asks for {refused}, which is not a tensor or a plain container; "
                "checkpoints are untrusted input and load only with torch.load(weights_only=True), which never "
                "builds such objects. If you wrote this file yourself and trust it, re-save just the tensors "
                "(e.g. torch.save(ckpt['state_dict'], 'weights.pt')) and use that."
            ) from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, AttributeError, TypeError) as err:
        kind = "truncated or corrupt zip archive" if is_zip else "not a torch checkpoint"
        raise CheckpointError(f"{path}: cannot load it ({kind}: {_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def same_file(a: PathLike, b: PathLike) -> bool:
    """Do ``a`` and ``b`` name the same file (through symlinks and hard links too)?"""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and a failed write leaves ``path`` as it was.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CheckpointError(f"{path}: directory {directory} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the mode open() would
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
