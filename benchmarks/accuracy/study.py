"""Running the study: for every task and seed, the dense run, a second identical run that
carries every method that does not change training (copies), then one run per
training-changing method and level; every final model is evaluated and its pruned tensors
measured from their zeros."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import lightning.pytorch as pl
import torch
from torch import nn

from benchmarks import machine
from benchmarks.accuracy.methods import BLOCK, DENSE, EVERY_N_STEPS, LEVELS, METHODS, RAMP_FRACTION, Level, Method, Plan
from benchmarks.accuracy.tasks import Task, pruned, tasks
from blocksparsity.export import is_n_m_sparse


@dataclass
class Row:
    """One (task, method, level, seed): a figure or why there is none."""

    task: str
    method: str
    level: str
    seed: int | None
    status: str = "ok"  # "ok" or "n/a: why"
    metric: float | None = None
    reached: float | None = None  # zeros / elements over the pruned tensors of the final model
    expected: float | None = None
    max_deviation_units: float | None = None  # worst tensor: |zeros - expected * numel| in the method's units
    unit: str | None = None
    two_four: bool | None = None  # every group of 4 along the rows of every pruned tensor holds 2 zeros
    fit_seconds: float | None = None  # training wall time (trainer.fit), without other methods' callbacks
    sparsity_seconds: float | None = None  # time inside this method's callback hooks


@dataclass
class Settings:
    quick: bool
    seeds: list[int]
    levels: list[str]
    methods: list[str]
    tasks: list[str]
    threads: int


@dataclass
class Study:
    machine: dict
    settings: Settings
    tasks: dict[str, dict] = field(default_factory=dict)  # name -> description, metric, epochs, steps
    rows: list[Row] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, body: dict) -> Study:
        """The study that ``to_json`` wrote (to render its report or plot again)."""
        return cls(body["machine"], Settings(**body["settings"]), body["tasks"], [Row(**r) for r in body["rows"]],
                   body["elapsed_seconds"], body["notes"])

    def to_json(self) -> dict:
        return {"machine": self.machine, "settings": asdict(self.settings), "tasks": self.tasks,
                "rows": [asdict(r) for r in self.rows], "elapsed_seconds": self.elapsed_seconds, "notes": self.notes}


def _unit_elements(unit: str, p: torch.Tensor) -> float:
    return {"block": BLOCK[0] * BLOCK[1], "element": 1, "slice": p.numel() / p.shape[1]}[unit]


def measure(model: nn.Module, level: Level, unit: str) -> dict:
    """Sparsity of the final model's pruned tensors, from their zeros."""
    names = [n for n, _ in model.named_parameters()]
    leftover = [n for n in names if n.endswith("_orig")]
    if leftover:
        raise RuntimeError(f"pruning was not made permanent: {leftover}")
    params = [p.detach() for n, p in model.named_parameters() if pruned(n, p)]
    zeros = [int((p == 0).sum()) for p in params]
    deviation = max(abs(z - level.expected * p.numel()) / _unit_elements(unit, p) for z, p in zip(zeros, params, strict=True))
    out = {"reached": sum(zeros) / sum(p.numel() for p in params), "expected": level.expected,
           "max_deviation_units": deviation, "unit": unit}
    if level.two_four:
        out["two_four"] = all(is_n_m_sparse(p.reshape(p.shape[0], -1), n=2, m=4) and (p == 0).float().mean() == 0.5
                              for p in params)
    return out


def _fit(task: Task, seed: int, make_callbacks: Callable[[pl.LightningModule], list[pl.Callback]]
         ) -> tuple[pl.LightningModule, list[pl.Callback], float]:
    """Train ``task`` from ``seed`` with the callbacks built on the run's own module."""
    pl.seed_everything(seed, verbose=False)
    module = task.make_module()
    callbacks = make_callbacks(module)
    trainer = pl.Trainer(max_epochs=task.epochs, callbacks=[c for c in callbacks if c is not None], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, accelerator="cpu", devices=1)
    loader = task.make_loader(seed)
    start = time.perf_counter()
    trainer.fit(module, loader)
    return module, callbacks, time.perf_counter() - start


def _plan(task: Task) -> Plan:
    return Plan(task.epochs, len(task.make_loader(0)))


def _seconds(cb: pl.Callback | None) -> float:
    return 0.0 if cb is None else float(getattr(cb, "seconds_in_callback", 0.0))


def _evaluate(task: Task, method: Method, level: Level, seed: int, cb, module, fit_seconds: float) -> Row:
    model = method.final(cb, module)
    row = Row(task.name, method.key, level.name, seed, metric=task.evaluate(model), fit_seconds=fit_seconds,
              sparsity_seconds=_seconds(cb) if cb is not None else None, **measure(model, level, method.unit(level)))
    return row


def _levels_for(method: Method, levels: list[Level]) -> list[Level]:
    return [DENSE] if method.key == "dense" else levels


def run_task_seed(task: Task, seed: int, methods: list[Method], levels: list[Level], probe: nn.Module,
                  tick: Callable[[str], None], done: Callable[[], None], notes: list[str]) -> list[Row]:
    """Every method at every level on one task and seed: the dense run alone, then the copy
    methods together on a second dense run (they do not change training), then one run per
    training-changing method and level."""
    plan = _plan(task)
    rows: list[Row] = []
    shared: list[tuple[Method, Level]] = []
    own: list[tuple[Method, Level]] = []
    for method in methods:
        for level in _levels_for(method, levels):
            why = method.not_applicable(task.name, level, probe)
            if why:
                rows.append(Row(task.name, method.key, level.name, seed, status=f"n/a: {why}"))
            else:
                (shared if method.shared else own).append((method, level))
    dense = [(m, lv) for m, lv in shared if m.key == "dense"]
    copies = [(m, lv) for m, lv in shared if m.key != "dense"]
    if dense:  # alone, so that its training time is the plain one
        tick(f"{task.name} seed {seed}: dense")
        module, _, fit_s = _fit(task, seed, lambda module: [])
        dense_row = _evaluate(task, *dense[0], seed, None, module, fit_s)
        rows.append(dense_row)
        done()
    if copies:  # the same training again (same seed), every copy method at every level on it
        tick(f"{task.name} seed {seed}: dense + {len(copies)} copies")
        module, callbacks, fit_s = _fit(task, seed, lambda module: [m.make(lv, plan, module) for m, lv in copies])
        others = sum(_seconds(c) for c in callbacks)
        for (method, level), cb in zip(copies, callbacks, strict=True):
            rows.append(_evaluate(task, method, level, seed, cb, module, fit_s - others + _seconds(cb)))
        if dense and task.evaluate(module.model) != dense_row.metric:
            notes.append(f"{task.name} seed {seed}: the copies' run did not reproduce the dense run's model")
        done()
    for method, level in own:
        tick(f"{task.name} seed {seed}: {method.key} {level.name}")
        module, (cb,), fit_s = _fit(task, seed, lambda module, m=method, lv=level: [m.make(lv, plan, module)])
        rows.append(_evaluate(task, method, level, seed, cb, module, fit_s))
        done()
    return rows


def count_runs(task_list: list[Task], methods: list[Method], levels: list[Level], seeds: list[int], probes) -> int:
    n = 0
    for task in task_list:
        own = sum(1 for m in methods if not m.shared for lv in _levels_for(m, levels)
                  if not m.not_applicable(task.name, lv, probes[task.name]))
        dense = any(m.key == "dense" for m in methods)
        copies = any(m.shared and m.key != "dense" for m in methods)
        n += (own + dense + copies) * len(seeds)
    return n


def _quiet_lightning() -> None:
    """No "GPU available: ...", tips and "fit stopped" lines for every one of the runs. torch.ao's
    callbacks import ``pytorch_lightning``, which points Lightning's rank-zero log at its own
    logger (at INFO) on import: import it first, then quiet both."""
    with contextlib.suppress(ImportError):
        import pytorch_lightning  # noqa: F401
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "pytorch_lightning", "pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(settings: Settings, progress: bool | None = None) -> Study:
    """The whole study; ``progress``: None shows a bar only on a terminal, False never."""
    from tqdm import tqdm

    torch.set_num_threads(settings.threads)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    _quiet_lightning()
    start = time.perf_counter()
    study = Study(machine.describe("cpu"), settings)
    task_list = [t for t in tasks(settings.quick) if t.name in settings.tasks]
    methods = [m for m in METHODS if m.key in settings.methods]
    levels = [LEVELS[name] for name in settings.levels]
    probes = {t.name: t.make_module().model for t in task_list}
    for task in task_list:
        plan = _plan(task)
        study.tasks[task.name] = {"description": task.description, "metric": task.metric, "epochs": task.epochs,
                                  "steps_per_epoch": plan.steps_per_epoch,
                                  "pruned": {n: list(p.shape) for n, p in probes[task.name].named_parameters() if pruned(n, p)}}
    study.notes.append(
        f"Gradual methods reach the final level after {RAMP_FRACTION:.0%} of training (cubic ramp) and train on at it; "
        f"in-place masks move every {EVERY_N_STEPS} optimizer steps; copies reach it at the last epoch.")
    # disable=None: a bar on a terminal only, so a log file gets no line per refresh
    bar = tqdm(total=count_runs(task_list, methods, levels, settings.seeds, probes), unit="run",
               disable=None if progress is None else not progress, dynamic_ncols=True, mininterval=1.0)
    try:
        for task in task_list:
            for seed in settings.seeds:
                study.rows.extend(run_task_seed(task, seed, methods, levels, probes[task.name], bar.set_postfix_str,
                                                bar.update, study.notes))
    finally:
        bar.close()
    study.elapsed_seconds = time.perf_counter() - start
    study.machine["load_average_end"] = machine.load_average()
    return study
