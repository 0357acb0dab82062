"""Peak extra memory of one call, as a multiple of the input's size.

On CUDA: the allocator's peak above what was allocated before the call. On CPU: the
process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) above the
resident set before the call, measured in a separate process with glibc returning every
large block to the system on free (``MALLOC_MMAP_THRESHOLD_``): a freed block can then
neither hide a later peak (it must be faulted in again) nor inflate it (it is no longer
resident). The figure counts what the call returns (the mask) and every temporary.

``peak_extra_bytes`` starts one process per measurement; ``MemoryProbe`` keeps one worker
process for a whole run (starting Python and torch costs seconds), each case with a fresh
input. Run as ``python -m benchmarks.memory CONTENDER CASE_JSON`` or ``... --worker``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterable

import torch

from benchmarks.cases import Case
from benchmarks.contenders import CONTENDERS

# Collecting garbage costs ~0.1 s with torch loaded: worth it only where leftovers are large.
COLLECT_ABOVE_BYTES = 16 << 20
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_call(run, device: str, setup=None) -> int:
    """Peak bytes above what is held before one call of ``run`` (after ``setup``, untimed).
    In-process: exact on CUDA; on CPU only in a process started with ``MALLOC_ENV``."""
    if setup is not None:
        setup()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del result
        return max(0, peak - before)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set to the current one
    result = run()
    peak = _status_kib("VmHWM")
    del result
    return max(0, peak - before) * 1024


def _measure_here(contender: str, case: Case, device: str, x: torch.Tensor | None = None) -> int | None:
    """Peak extra bytes of one call (after a warm-up call) on ``x`` (default: a new input)."""
    x = case.make_input(device) if x is None else x
    run = CONTENDERS[contender](case, x)
    if run is None:
        return None
    run()  # warm-up: lazy initialisation is not the operation's memory
    if case.input_bytes >= COLLECT_ABOVE_BYTES:
        gc.collect()  # large leftovers of earlier measurements must not be freed during this one
    return measure_call(run, device)


def peak_extra_bytes(contender: str, case: Case, device: str) -> int | None:
    """Peak bytes above the input that one call needs (None where the contender can't run)."""
    if device == "cuda":
        return _measure_here(contender, case, device)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", contender, json.dumps(case.to_dict())],
        env={**os.environ, **MALLOC_ENV}, capture_output=True, text=True, check=True,
    )
    value = json.loads(done.stdout.strip().splitlines()[-1])
    return None if value is None else int(value)


class MemoryProbe:
    """One worker process measuring CPU peaks case by case (``measure``); use as a context manager."""

    def __init__(self, threads: int | None = None) -> None:
        self._proc: subprocess.Popen | None = None
        self._env = {**os.environ, **MALLOC_ENV, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}

    def __enter__(self) -> MemoryProbe:
        self._start()
        return self

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.memory", "--worker"], env=self._env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            # Out of the process group: Ctrl-C or ``timeout`` interrupt the parent, which then
            # reports and closes our stdin (ending the worker) instead of a traceback here.
            start_new_session=True,
        )

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.stdout.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None

    def measure(self, case: Case, contenders: Iterable[str]) -> dict[str, int | str]:
        """Peak extra bytes of each contender on ``case`` (or the error it raised, as text)."""
        assert self._proc is not None, "use MemoryProbe as a context manager"
        if self._proc.poll() is not None:  # an earlier case killed it: start afresh
            self._start()
        try:
            self._proc.stdin.write(json.dumps({"case": case.to_dict(), "contenders": list(contenders)}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"memory worker died (exit code {self._proc.poll()})")
        return json.loads(line)


def _worker() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        case = Case.from_dict(request["case"])
        x = case.make_input("cpu")  # shared: an in-place contender leaves it sparsified, which moves no peak
        answer: dict[str, int | str] = {}
        for name in request["contenders"]:
            try:
                answer[name] = _measure_here(name, case, "cpu", x)
            except Exception as e:  # an out-of-memory or a failing contender is a result too
                answer[name] = f"{type(e).__name__}: {e}"
        del x
        try:
            print(json.dumps(answer), flush=True)
        except BrokenPipeError:  # the parent is gone (interrupted): nobody wants the answer
            return


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker()
    else:
        print(json.dumps(_measure_here(sys.argv[1], Case.from_dict(json.loads(sys.argv[2])), "cpu")))
