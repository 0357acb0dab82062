"""What the figures were measured on: device, CUDA, torch, triton, commit, date."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def commit() -> str:
    """The checkout's commit (short hash, "+dirty" with uncommitted changes to tracked files);
    ``BLOCKSPARSITY_COMMIT`` where there is no git checkout (e.g. a copied tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, check=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("BLOCKSPARSITY_COMMIT", "unknown")


def load_average() -> float | None:
    """The 1-minute load average (runnable processes): above the core count, contenders share the CPU."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def describe(device: str) -> dict:
    """The machine, as the header of the report."""
    cores = os.cpu_count()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "cpu": f"{_cpu_name()}, {cores} cores, torch threads: {torch.get_num_threads()}",
        "memory_gib": round(_memory_gib() or 0, 1),
        "cuda": torch.version.cuda or "none",
        "torch": torch.__version__,
        "triton": _version("triton"),
        "python": platform.python_version(),
        "commit": commit(),
        # Other work on the machine slows the contenders (not alike): worth knowing on a shared CPU.
        "load_average": load_average(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["device_name"] = props.name
        info["device_memory_gib"] = round(props.total_memory / (1 << 30), 1)
    else:
        info["device_name"] = f"CPU: {info['cpu']}"
    return info
