"""The harness's cases and contenders as a pytest-benchmark view (``python -m benchmarks`` is
the runner; this adds pytest-benchmark's own statistics, comparisons and storage):

    pytest benchmarks/bench_harness.py                       # quick sizes on CPU, full on a GPU
    BENCH_SIZE=full pytest benchmarks/bench_harness.py -k "block_mask and 4096"
    pytest benchmarks/bench_harness.py --benchmark-group-by=param:case --benchmark-columns=median,rounds

One test per case of ``cases.default_cases`` and contender of ``contenders.CONTENDERS``, skipped
where the contender cannot run the case; the input and the untimed setup before every round
are ``harness.prepare``'s, as in the harness; rounds are the harness's default repeats. Not
collected by a plain ``pytest`` (``testpaths = ["tests"]``).
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks import harness, timing
from benchmarks.cases import default_cases
from benchmarks.contenders import CONTENDERS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
QUICK = os.environ.get("BENCH_SIZE", "full" if DEVICE == "cuda" else "quick") == "quick"
CASES = default_cases(DEVICE, quick=QUICK)
ROUNDS = harness.default_settings(DEVICE, QUICK)["repeats"]


@pytest.fixture(scope="module")
def prepared():
    """``harness.prepare(case)``, made once per case and shared by every contender (the last one only: big)."""
    cache: dict = {}

    def get(case):
        if case not in cache:
            cache.clear()
            cache[case] = harness.prepare(case, DEVICE)
        return cache[case]

    return get


@pytest.mark.parametrize("contender", list(CONTENDERS))
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name.replace(" ", "-"))
def test_contender(benchmark, prepared, case, contender):
    why = CONTENDERS[contender].unsupported(case, DEVICE)
    if why:
        pytest.skip(why)
    work, setup = prepared(case)
    run = CONTENDERS[contender].build(case, work)

    def setup_and_sync():
        setup()
        timing.synchronize(DEVICE)

    def call():
        run()
        timing.synchronize(DEVICE)

    benchmark.extra_info.update(case=case.name, contender=contender, bytes=case.input_bytes)
    benchmark.pedantic(call, setup=setup_and_sync, rounds=ROUNDS, warmup_rounds=1)
