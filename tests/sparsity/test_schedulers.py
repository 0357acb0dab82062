"""Schedulers: torch.ao's contract and values, step-order warnings, exact resumption."""

from __future__ import annotations

import warnings

import pytest
import torch

from blocksparsity import (
    CubicSLScheduler,
    DataNormSparsifier,
    LambdaSLScheduler,
    LinearSLScheduler,
    StepSLScheduler,
)

try:
    from torch.ao.pruning._experimental.data_scheduler import BaseDataScheduler as RefBaseScheduler
    from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as RefSparsifier
    from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL as RefCubicSL
except ImportError:  # pragma: no cover
    RefBaseScheduler = None
needs_reference = pytest.mark.skipif(RefBaseScheduler is None, reason="torch.ao not installed")


def make_sparsifier(levels=(0.1, 0.2, 0.05), seed=0):
    g = torch.Generator().manual_seed(seed)
    s = DataNormSparsifier(sparsity_level=levels[0], zeros_per_block=2)
    for i, level in enumerate(levels):
        s.add_data(f"w{i}", torch.randn(16, 24, generator=g), sparsity_level=level)
    return s


SCHEDULERS = {
    "step": lambda s: StepSLScheduler(s, step_size=2, gamma=1.5),
    "cubic": lambda s: CubicSLScheduler(s, init_sl=0.0, init_t=1, delta_t=2, total_t=3),
    "linear": lambda s: LinearSLScheduler(s, init_sl=[0.0, 0.1, 0.0], init_t=1, total_t=5),
    "lambda": lambda s: LambdaSLScheduler(s, sl_lambda=lambda epoch: min(1.0, 0.2 * epoch)),
}


def run(sparsifier, scheduler, epochs):
    levels, masks = [], []
    for _ in range(epochs):
        sparsifier.step()
        scheduler.step()
        levels.append(dict(scheduler.get_last_param()))
        masks.append({n: sparsifier.get_mask(n).clone() for n in sparsifier.data_groups})
    return levels, masks


@pytest.mark.parametrize("kind", list(SCHEDULERS))
def test_resume_from_state_dicts_continues_exactly(kind):
    s = make_sparsifier()
    levels, masks = run(s, SCHEDULERS[kind](s), 8)

    first = make_sparsifier()
    sched = SCHEDULERS[kind](first)
    run(first, sched, 3)
    saved_sparsifier, saved_scheduler = first.state_dict(), sched.state_dict()

    resumed = make_sparsifier(levels=(0.9, 0.9, 0.9))  # wrong levels: the state must fix them
    resumed.load_state_dict(saved_sparsifier)
    sched2 = SCHEDULERS[kind](resumed)
    sched2.load_state_dict(saved_scheduler)
    levels2, masks2 = run(resumed, sched2, 5)
    assert levels2 == levels[3:]
    for a, b in zip(masks[3:], masks2, strict=True):
        assert all(torch.equal(a[n], b[n]) for n in a)


@needs_reference
@pytest.mark.filterwarnings("ignore:sparsity_level .* is above 1")
def test_step_scheduler_matches_torch_ao_lightning_semantics():
    class RefStepSL(RefBaseScheduler):  # as in torch.ao's Lightning callback tests
        def __init__(self, data_sparsifier, schedule_param="sparsity_level", step_size=1, gamma=2, last_epoch=-1):
            self.gamma, self.step_size = gamma, step_size
            super().__init__(data_sparsifier, schedule_param, last_epoch)

        def get_schedule_param(self):
            groups = self.data_sparsifier.data_groups
            if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
                return {n: c[self.schedule_param] for n, c in groups.items()}
            return {n: c[self.schedule_param] * self.gamma for n, c in groups.items()}

    data = [("a", torch.randn(12, 16)), ("b", torch.randn(8, 8))]
    ours = DataNormSparsifier(data, sparsity_level=0.05, zeros_per_block=4)
    ref = RefSparsifier(data, sparsity_level=0.05, zeros_per_block=4)
    ours_sched, ref_sched = StepSLScheduler(ours, step_size=2, gamma=2), RefStepSL(ref, step_size=2, gamma=2)
    for _ in range(12):
        ours.step()
        ref.step()
        ours_sched.step()
        ref_sched.step()
        assert ours_sched.get_last_param() == ref_sched.get_last_param()
        assert ours_sched.last_epoch == ref_sched.last_epoch
        for name, _ in data:
            assert torch.equal(ours.get_mask(name), ref.get_mask(name).bool())


@needs_reference
def test_cubic_formula_matches_torch_ao():
    for s_0, s_f, t_0, dt, n, zero in [(0.0, 0.9, 0, 10, 100, False), (0.1, 0.5, 5, 2, 7, True), (0.2, 0.8, 3, 1, 1, False)]:
        for t in range(-2, 40):
            ours = CubicSLScheduler.sparsity_compute_fn(s_0, s_f, t, t_0, dt, n, zero)
            assert ours == RefCubicSL.sparsity_compute_fn(s_0, s_f, t, t_0, dt, n, zero)


def test_cubic_scheduler_values():
    s = make_sparsifier(levels=(0.8, 0.4, 0.6))
    sched = CubicSLScheduler(s, init_sl=0.0, init_t=0, delta_t=1, total_t=4)
    expected = {name: [CubicSLScheduler.sparsity_compute_fn(0.0, base, t, 0, 1, 4) for t in range(1, 7)]
                for name, base in sched.base_param.items()}
    levels, _ = run(s, sched, 6)
    for name in expected:
        assert [lv[name] for lv in levels] == expected[name]
    assert levels[-1] == {"w0": 0.8, "w1": 0.4, "w2": 0.6}


def test_linear_and_lambda_values():
    s = make_sparsifier(levels=(0.5, 0.5, 0.5))
    levels, _ = run(s, LinearSLScheduler(s, init_sl=0.0, init_t=2, total_t=4, initially_zero=True), 7)
    assert [lv["w0"] for lv in levels] == [0, 0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    s = make_sparsifier(levels=(0.5, 0.5, 0.5))
    levels, _ = run(s, LambdaSLScheduler(s, sl_lambda={"w0": lambda e: e, "w1": lambda e: 1, "w2": lambda e: 0}), 3)
    assert [(lv["w0"], lv["w1"], lv["w2"]) for lv in levels] == [(0.5, 0.5, 0), (1.0, 0.5, 0), (1.5, 0.5, 0)]


def test_step_order_warnings():
    s = make_sparsifier()
    sched = StepSLScheduler(s)
    with pytest.warns(UserWarning, match="before `data_sparsifier.step"):
        sched.step()
    s = make_sparsifier()
    sched = StepSLScheduler(s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.step()
        sched.step()
    with pytest.warns(UserWarning, match="get_last_param"):
        sched.get_schedule_param()


@pytest.mark.parametrize("make, error, word", [
    (lambda s: StepSLScheduler(object()), TypeError, "data_sparsifier"),
    (lambda s: StepSLScheduler(s, schedule_param="sparsity"), ValueError, "sparsity"),
    (lambda s: StepSLScheduler(s, step_size=0), ValueError, "step_size"),
    (lambda s: StepSLScheduler(s, gamma=-1), ValueError, "gamma"),
    (lambda s: StepSLScheduler(s, last_epoch=-2), ValueError, "last_epoch"),
    (lambda s: CubicSLScheduler(s, total_t=0), ValueError, "total_t"),
    (lambda s: CubicSLScheduler(s, init_sl=[0.1]), ValueError, "init_sl"),
    (lambda s: LambdaSLScheduler(s, sl_lambda=3), TypeError, "sl_lambda"),
    (lambda s: LambdaSLScheduler(s, sl_lambda={"w0": abs}), ValueError, "sl_lambda"),
])
def test_bad_scheduler_arguments_change_nothing(make, error, word):
    s = make_sparsifier()
    before = {n: dict(c) for n, c in s.data_groups.items()}
    with pytest.raises(error, match=word):
        make(s)
    assert s.data_groups == before


def test_load_state_dict_rejects_garbage():
    s = make_sparsifier()
    with pytest.raises(ValueError, match="state_dict"):
        StepSLScheduler(s).load_state_dict({"nonsense": 1})


# ------------------------------------------------------------------ shortfall_at (the ramp check)
def test_shortfall_at_says_which_group_a_ramp_has_not_finished_and_what_to_set():
    from blocksparsity.schedulers import Shortfall

    s = make_sparsifier(levels=(0.5, 0.5, 0.5))
    cubic = CubicSLScheduler(s, init_sl=0.0, init_t=0, delta_t=1, total_t=4)
    short = cubic.shortfall_at(3)
    assert isinstance(short, Shortfall) and short.final == 0.5 and short.final_t == 4
    assert short.name == next(iter(s.data_groups)) and 0.0 < short.value < 0.5
    assert short.value == pytest.approx(cubic.sparsity_compute_fn(0.0, 0.5, 3, 0, 1, 4))
    assert "total_t=3 with delta_t=1" in short.how_to_end
    assert cubic.shortfall_at(4) is None and cubic.shortfall_at(100) is None
    epoch = cubic.last_epoch
    cubic.shortfall_at(2)
    assert cubic.last_epoch == epoch  # it changes nothing

    linear = LinearSLScheduler(make_sparsifier(levels=(0.4, 0.4, 0.4)), init_t=2, total_t=5)
    assert linear.shortfall_at(6).how_to_end == "init_t + total_t <= 6, e.g. total_t=4"
    assert linear.shortfall_at(7) is None


def test_schedules_without_an_end_have_no_shortfall():
    assert StepSLScheduler(make_sparsifier(), gamma=2).shortfall_at(0) is None
    assert LambdaSLScheduler(make_sparsifier(), sl_lambda=lambda e: 0.5).shortfall_at(0) is None
