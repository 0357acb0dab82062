"""Peak extra memory of one call, as a multiple of the input's size.

On CUDA: the allocator's peak above what was allocated before the call. On CPU: the
process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) above the
resident set before the call, measured in a fresh subprocess with glibc returning every
large block to the system on free (``MALLOC_MMAP_THRESHOLD_``), so that earlier runs
cannot hide or inflate the figure. Run as ``python -m benchmarks.memory CONTENDER CASE_JSON``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from benchmarks.cases import Case
from benchmarks.contenders import CONTENDERS


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_here(contender: str, case: Case, device: str) -> int | None:
    x = case.make_input(device)
    run = CONTENDERS[contender](case, x)
    if run is None:
        return None
    run()  # warm-up: lazy initialisation is not the operation's memory
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = run()
        torch.cuda.synchronize()
        del result
        return torch.cuda.max_memory_allocated() - before
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set to the current one
    result = run()
    peak = _status_kib("VmHWM")
    del result
    return max(0, peak - before) * 1024


def peak_extra_bytes(contender: str, case: Case, device: str) -> int | None:
    """Peak bytes above the input that one call needs (None where the contender can't run)."""
    if device == "cuda":
        return _measure_here(contender, case, device)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", contender, json.dumps(case.to_dict())],
        env=env, capture_output=True, text=True, check=True,
    )
    value = json.loads(done.stdout.strip().splitlines()[-1])
    return None if value is None else int(value)


if __name__ == "__main__":
    print(json.dumps(_measure_here(sys.argv[1], Case.from_dict(json.loads(sys.argv[2])), "cpu")))
