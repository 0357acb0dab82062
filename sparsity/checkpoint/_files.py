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

from blocksparsity.checkpoint._format import CheckpointError

PathLike = str | os.PathLike


# Modules whose globals run code or touch the system when a pickle calls them.
CODE_MODULES = ("os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "socket", "importlib",
                "runpy", "pty", "code", "ctypes", "webbrowser", "pickle", "marshal", "types", "operator", "functools")


def _unsupported_global(err: BaseException) -> str | None:
    """The global torch's weights_only unpickler refused to build ('argparse.Namespace'), if it says."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err)) or re.search(
        r"unsupported GLOBAL ([\w.]+) whose module", str(err))
    if not found:
        return None
    name = found.group(1).rstrip(".")
    module, _, attr = name.rpartition(".")
    return f"os.{attr}" if module in ("posix", "nt") else name


def _refusal(path: Path, refused: str) -> str:
    module = refused.split(".")[0]
    if module in CODE_MODULES:
        return (f"{path}: refused: this file asks to run code ({refused}); it was not run. Checkpoints are untrusted "
                "input and are read with torch.load(weights_only=True), which never calls such functions.")
    return (
        f"{path}: refused: its pickle asks for {refused}, which is not a tensor or a plain container; "
        "checkpoints are untrusted input and load only with torch.load(weights_only=True), which never "
        "builds such objects. If you wrote this file yourself and trust it, re-save just the tensors "
        "(e.g. torch.save(ckpt['state_dict'], 'weights.pt')) and use that."
    )


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
            raise CheckpointError(_refusal(path, refused)) from None
        # torch's message advises weights_only=False, which would run whatever the file holds.
        found = re.search(r"Unsupported operand (\d+)", str(err))
        what = f"byte {int(found.group(1)):#04x} is not a pickle instruction for tensors" if found else "unreadable pickle"
        raise CheckpointError(f"{path}: not a checkpoint: not a torch.save file or a pickle of tensors ({what})") from None
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


TMP_TAG = "blocksparse-tmp"  # temporaries are ".<name>.blocksparse-tmp-<pid>.<random>.tmp"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{TMP_TAG}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: alive
    return True


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporaries that ``write_atomically`` left next to ``path`` in a process
    that no longer runs (killed by SIGKILL mid-write, or a power cut). Returns those removed.
    Another live process's temporary (a concurrent write) is left alone."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    prefix = _tmp_prefix(path)
    removed = []
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for candidate in candidates:
        pid = candidate.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                candidate.unlink()
                removed.append(candidate)
            except OSError:
                pass
    return removed


def write_atomically(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and a failed or interrupted write (an exception,
    Ctrl-C, or SIGTERM in the command line, which raises) leaves ``path`` as it was and removes
    the temporary. Temporaries that a killed process left behind are removed first (see
    ``remove_stale_temporaries``).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CheckpointError(f"{path}: directory {directory} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; name a file to write")
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f"{_tmp_prefix(path)}{os.getpid()}.", suffix=".tmp")
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
