"""pytest-benchmark suite for the first benchmark (``pytest benchmarks/bench_vs_reference.py``).
Each test times one contender on the 4096x4096 case; compare them with
``--benchmark-group-by=param:zpb``."""

from __future__ import annotations

import pytest

from benchmarks.cases import Case
from benchmarks.contenders import CONTENDERS


@pytest.mark.parametrize("zpb", [4, 2])
@pytest.mark.parametrize("contender", ["reference", "ours-torch"])
def test_block_mask_4096(benchmark, contender, zpb):
    case = Case("block_mask", (4096, 4096), zeros_per_block=zpb)
    run = CONTENDERS[contender](case, case.make_input("cpu"))
    if run is None:
        pytest.skip(f"{contender} cannot run here")
    benchmark.pedantic(run, rounds=5 if contender == "ours-torch" else 3, warmup_rounds=1)
