"""pytest-benchmark suite over the harness's cases and contenders:

    pytest benchmarks/bench_harness.py                       # quick sizes on CPU, full on a GPU
    BENCH_SIZE=full pytest benchmarks/bench_harness.py -k "block_mask and 4096"
    pytest benchmarks/bench_harness.py --benchmark-group-by=param:case --benchmark-columns=median,rounds

One test per case and contender, each on the same input as its rivals (made from the same
seed); in-place operations get their input back before every round, outside the timing.
Not collected by a plain ``pytest`` (``testpaths = ["tests"]``). The command
``python -m benchmarks`` measures the same thing with bandwidth and memory figures.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.cases import default_cases
from benchmarks.contenders import CONTENDERS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
QUICK = os.environ.get("BENCH_SIZE", "full" if DEVICE == "cuda" else "quick") == "quick"
CASES = default_cases(DEVICE, quick=QUICK)


def _id(case) -> str:
    return case.name.replace(" ", "-")


@pytest.fixture(scope="module")
def inputs():
    """One input per case, made once and shared by every contender (the last one only: big)."""
    cache: dict = {}

    def get(case):
        if case not in cache:
            cache.clear()
            cache[case] = case.make_input(DEVICE)
        return cache[case]

    return get


@pytest.mark.parametrize("contender", list(CONTENDERS))
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_contender(benchmark, inputs, case, contender):
    why = CONTENDERS[contender].unsupported(case, DEVICE)
    if why:
        pytest.skip(why)
    x = inputs(case)
    work = x.clone() if case.mutates_input else x
    run = CONTENDERS[contender].build(case, work)

    def setup():
        if case.mutates_input:
            work.copy_(x)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def call():
        run()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info.update(case=case.name, contender=contender, bytes=case.input_bytes)
    benchmark.pedantic(call, setup=setup, rounds=3 if DEVICE == "cpu" else 10, warmup_rounds=1)
