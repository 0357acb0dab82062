"""One benchmark run: every case, every contender on the same tensors, within a budget.

For each case the input is made once; contenders that only read it share it, and for an
operation that writes its input (in-place sparsify) every call gets a fresh copy of it,
restored outside the timed region. A contender is left out of a case, with the reason in
the report, where it cannot run it ("n/a"), where its time per call (extrapolated from
the same contender on a smaller case of the same op) or its memory would exceed the
budget, or where the run is past its deadline ("skipped"). A contender that raises is
reported as "failed" and the run goes on.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks import machine
from benchmarks.bandwidth import CopyBandwidth, bytes_moved, copy_bandwidth
from benchmarks.cases import Case
from benchmarks.contenders import CONTENDERS, Contender, Runner
from benchmarks.memory import COLLECT_ABOVE_BYTES, MemoryProbe, measure_call
from benchmarks.timing import nothing, once, sample_seconds


@dataclass
class Settings:
    """How a run measures. ``repeats``: timed calls per contender and case, raised on the
    CPU for fast calls until the slowest contender's calls add up to ``min_seconds`` (at
    most ``MAX_REPEATS``: a busy machine's hiccups then move the median less);
    ``budget_seconds``: the longest (estimated) call worth timing; ``deadline_seconds``:
    after this long no new case starts; ``copy_bytes``: the buffer size of the
    copy-bandwidth measurement."""

    device: str
    repeats: int
    copy_bytes: int
    budget_seconds: float
    min_seconds: float = 0.0
    threads: int | None = None
    memory: bool = True
    deadline_seconds: float | None = None
    progress: bool = True
    quick: bool = False
    matrix: str = "axes"


@dataclass
class Measurement:
    """One contender on one case. ``status``: "ok", "n/a", "skipped" or "failed" (``reason`` says why)."""

    status: str
    reason: str = ""
    seconds: float | None = None
    samples: list[float] = field(default_factory=list)
    peak_extra_bytes: int | None = None
    memory_error: str = ""


@dataclass
class CaseResult:
    case: Case
    bytes_moved: int
    measurements: dict[str, Measurement]


@dataclass
class Run:
    """Everything a report needs."""

    machine: dict
    settings: Settings
    contenders: list[str]
    copy: list[CopyBandwidth]
    results: list[CaseResult] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    interrupted: bool = False

    @property
    def copy_gbps(self) -> float:
        """The best copy bandwidth measured in this run (at its start and its end)."""
        return max(c.gbps for c in self.copy)


def available_bytes(device: str) -> int:
    """Memory free for a contender's temporaries now."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


MAX_REPEATS = 25


class Budget:
    """Decides which contender/case pairs are worth measuring, from what was measured so far."""

    def __init__(self, seconds_per_call: float, device: str):
        self.seconds_per_call, self.device = seconds_per_call, device
        self._rate: dict[tuple, float] = {}  # seconds per element, per contender and op

    @staticmethod
    def _key(contender: Contender, case: Case) -> tuple:
        return contender.name, case.op, 0 < case.zeros_per_block < case.block_size

    def why_skip(self, contender: Contender, case: Case) -> str | None:
        rate = self._rate.get(self._key(contender, case))
        if rate is not None and rate * case.numel > self.seconds_per_call:
            return f"skipped: ~{rate * case.numel:.1f} s/call > {self.seconds_per_call:g} s budget"
        need = contender.memory_factor * case.input_bytes
        if need > 0.6 * available_bytes(self.device):
            return f"skipped: needs ~{need / 2**30:.1f} GiB, > memory budget"
        return None

    def first_call_too_slow(self, contender: Contender, seconds: float) -> str | None:
        """Where an untimed first call (the faster of two, see ``Harness.measure``) exceeds the budget."""
        if not contender.compiles and seconds > self.seconds_per_call:
            return f"skipped: first calls took {seconds:.1f} s > {self.seconds_per_call:g} s budget"
        return None

    def record(self, contender: Contender, case: Case, seconds: float) -> None:
        self._rate[self._key(contender, case)] = seconds / case.numel


def _failure(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".splitlines()[0]
    return "failed: " + (text if len(text) <= 120 else text[:117] + "...")


def prepare(case: Case, device: str) -> tuple[torch.Tensor, Callable[[], object]]:
    """The tensor every contender of ``case`` is built on, and the untimed setup before each
    call: for an operation that writes its input (in-place sparsify) a copy of the input,
    put back before every call; otherwise the input itself, and nothing to do."""
    x = case.make_input(device)
    if not case.mutates_input:
        return x, nothing
    work = x.clone()
    return work, lambda: work.copy_(x)


def _cleanup(device: str, collect: bool = True) -> None:
    if collect:
        gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


class Harness:
    """Measures cases one by one (``measure``) into a ``Run``."""

    def __init__(self, settings: Settings, contenders: list[str]):
        self.settings = settings
        self.device = settings.device
        self.contenders = [CONTENDERS[name] for name in contenders]
        self.budget = Budget(settings.budget_seconds, self.device)

    def measure(self, case: Case, probe: MemoryProbe | None, past_deadline: bool) -> CaseResult:
        result = CaseResult(case, bytes_moved(case), {})
        todo: list[Contender] = []
        for c in self.contenders:
            reason = c.unsupported(case, self.device) or ("skipped: out of time" if past_deadline else None)
            reason = reason or self.budget.why_skip(c, case)
            result.measurements[c.name] = Measurement("n/a" if reason and reason.startswith("n/a") else "skipped", reason or "")
            if reason is None:
                todo.append(c)
        if not todo:
            return result
        work, setup = prepare(case, self.device)
        runners: dict[str, Runner] = {}
        slowest = 0.0
        for c in todo:
            try:
                runner = c.build(case, work)
                first = once(runner, setup, self.device)
                if self.budget.first_call_too_slow(c, first):  # one more try: a busy moment is no verdict
                    first = min(first, once(runner, setup, self.device))
                reason = self.budget.first_call_too_slow(c, first)
                slowest = max(slowest, 0.0 if c.compiles else first)
            except Exception as e:  # report it and go on: one broken contender must not end the run
                reason = _failure(e)
                _cleanup(self.device)
            if reason:
                result.measurements[c.name] = Measurement(reason.split(":")[0], reason)
            else:
                runners[c.name] = runner
        repeats = self.settings.repeats
        if self.device == "cpu" and slowest > 0:
            repeats = max(repeats, min(MAX_REPEATS, math.ceil(self.settings.min_seconds / slowest)))
        self._time(case, runners, setup, result, repeats)
        if self.settings.memory and runners:
            self._memory(case, runners, setup, probe, result)
        return result

    def _time(
        self, case: Case, runners: dict[str, Runner], setup: Callable[[], object], result: CaseResult, repeats: int
    ) -> None:
        groups = [list(runners)] if self.device == "cpu" else [[name] for name in runners]  # CPU: in alternation
        for names in groups:
            try:
                samples = sample_seconds([runners[n] for n in names], self.device, repeats, setup, warmup=0)
            except Exception as e:
                for n in names:
                    result.measurements[n] = Measurement("failed", _failure(e))
                    runners.pop(n)
                _cleanup(self.device)
                continue
            for n, times in zip(names, samples, strict=True):
                result.measurements[n] = Measurement("ok", seconds=statistics.median(times), samples=times)
                self.budget.record(CONTENDERS[n], case, min(times))  # the fastest call: least disturbed by other work

    def _memory(self, case: Case, runners: dict[str, Runner], setup: Callable[[], object], probe: MemoryProbe | None,
                result: CaseResult) -> None:
        if self.device == "cuda":
            peaks: dict[str, int | str] = {}
            for name, run in runners.items():
                try:
                    peaks[name] = measure_call(run, "cuda", setup)
                except Exception as e:
                    peaks[name] = _failure(e)
                    _cleanup(self.device)
        else:
            assert probe is not None
            try:
                peaks = probe.measure(case, list(runners))
            except RuntimeError as e:  # the worker died (e.g. killed for memory); the next case starts another
                peaks = {name: _failure(e) for name in runners}
        for name, peak in peaks.items():
            if isinstance(peak, int):
                result.measurements[name].peak_extra_bytes = peak
            else:
                result.measurements[name].memory_error = str(peak)


def run(cases: list[Case], contenders: list[str], settings: Settings) -> Run:
    """Measure every case (in order) with every contender that runs on the device."""
    from tqdm import tqdm

    if settings.threads:
        torch.set_num_threads(settings.threads)
    names = [n for n in contenders if settings.device in CONTENDERS[n].devices]
    start = time.perf_counter()
    outcome = Run(machine.describe(settings.device), settings, names, [copy_bandwidth(settings.device, settings.copy_bytes)])
    harness = Harness(settings, names)
    # disable=None: no bar when stderr is not a terminal (CI, nohup, a job log), where each
    # refresh would be a line of its own
    bar = tqdm(total=len(cases), disable=None if settings.progress else True, unit="case", dynamic_ncols=True,
               mininterval=1.0)
    probe = MemoryProbe(settings.threads) if settings.memory and settings.device == "cpu" else None
    try:
        if probe is not None:
            probe.__enter__()
        for case in cases:
            bar.set_postfix_str(case.name)
            late = settings.deadline_seconds is not None and time.perf_counter() - start > settings.deadline_seconds
            try:
                outcome.results.append(harness.measure(case, probe, late))
            except Exception as e:  # e.g. no memory for the input itself: the case fails, the run goes on
                failed = {n: Measurement("failed", _failure(e)) for n in names}
                outcome.results.append(CaseResult(case, bytes_moved(case), failed))
            _cleanup(settings.device, case.input_bytes >= COLLECT_ABOVE_BYTES)
            bar.update()
        outcome.copy.append(copy_bandwidth(settings.device, settings.copy_bytes))
    except KeyboardInterrupt:  # also SIGTERM (see __main__): report what was measured
        outcome.interrupted = True
        done = {r.case for r in outcome.results}
        for case in cases:
            if case not in done:
                outcome.results.append(
                    CaseResult(case, bytes_moved(case), {n: Measurement("skipped", "skipped: interrupted") for n in names}))
    finally:
        bar.close()
        if probe is not None:
            probe.__exit__(None, None, None)
    outcome.elapsed_seconds = time.perf_counter() - start
    outcome.machine["load_average_end"] = machine.load_average()
    return outcome


def default_settings(device: str, quick: bool, matrix: str = "axes") -> dict:
    """Repeats, budget and copy size that fit the device (and ``--quick``); ``matrix="update"``
    (the update at 4096^2: ~107 s a call on a CPU thread) times one call per case, with a
    budget that lets it run."""
    if matrix == "update" and not quick:
        return {"repeats": 1, "min_seconds": 0.0, "budget_seconds": 600.0, "copy_bytes": 256 << 20}
    if quick:
        return {"repeats": 3, "min_seconds": 0.0, "budget_seconds": 2.0, "copy_bytes": 32 << 20}
    if device == "cuda":
        return {"repeats": 10, "min_seconds": 0.0, "budget_seconds": 2.0, "copy_bytes": 1 << 30}
    return {"repeats": 3, "min_seconds": 1.0, "budget_seconds": 4.0, "copy_bytes": 256 << 20}

