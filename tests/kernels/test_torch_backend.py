"""The torch backend against the reference (``blocksparsity.kernels.naive``, a brute-force statement of
the semantics) and against torch.ao's DataNormSparsifier; its host-read shortcuts against
its sync-free code."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blocksparsity import kernels
from blocksparsity.kernels import naive
from blocksparsity.kernels._torch import _config as torch_config
from blocksparsity.kernels._torch import _policy
from blocksparsity.kernels._torch.select import kthvalue_threshold, select_threshold

try:
    from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier
except ImportError:  # pragma: no cover - the reference lives in torch 2.x
    DataNormSparsifier = None


def _config(draw, max_side=24):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(ndim))
    bs = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    zpb = draw(st.one_of(st.none(), st.integers(0, bs[0] * bs[1])))
    level = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) | st.floats(0, 1))
    norm = draw(st.sampled_from(["L1", "L2"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return shape, bs, zpb, level, norm, seed


configs = st.composite(_config)


def _data(shape, seed, kind):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # small integers: tied scores, tied magnitudes, all-zero rows
        x = torch.randint(-2, 3, shape, generator=g).float()
        if x.dim() > 1:
            x[: max(1, x.shape[0] // 3)] = 0
        return x
    return torch.randn(shape, generator=g)


@settings(max_examples=150, deadline=None)
@given(configs(), st.sampled_from(["random", "ties"]))
def test_block_mask_matches_brute_force(config, kind):
    shape, bs, zpb, level, norm, seed = config
    x = _data(shape, seed, kind)
    expected = naive.block_mask(x, level, bs, zpb, norm)
    got = kernels.block_mask(x, level, bs, zpb, norm, backend="torch")
    assert got.dtype == torch.bool and got.shape == x.shape
    assert torch.equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(configs(), st.sampled_from(["random", "ties"]))
def test_block_norm_matches_brute_force(config, kind):
    shape, bs, _, _, norm, seed = config
    x = _data(shape, seed, kind)
    got = kernels.block_norm(x, bs, norm, backend="torch")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive.block_norm(x, bs, norm), rtol=1e-6, atol=0)


@settings(max_examples=40, deadline=None)
@given(configs(max_side=40), st.integers(1, 64))
def test_chunking_and_radix_selection_do_not_change_masks(config, chunk):
    """Small chunks exercise multi-chunk rows, column chunks and ties across chunks; with
    KTHVALUE_MAX_BLOCKS at 0 the radix passes select, as for large grids, instead of kthvalue."""
    shape, bs, zpb, level, norm, seed = config
    x = _data(shape, seed, "ties")
    whole_mask = kernels.block_mask(x, level, bs, zpb, norm, backend="torch")
    whole_norm = kernels.block_norm(x, bs, norm, backend="torch")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch_config, "CHUNK_ELEMENTS", chunk)
        m.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
        m.setattr(torch_config, "KTHVALUE_MAX_BLOCKS", 0)
        assert torch.equal(kernels.block_mask(x, level, bs, zpb, norm, backend="torch"), whole_mask)
        assert torch.equal(kernels.block_norm(x, bs, norm, backend="torch"), whole_norm)


@settings(max_examples=60, deadline=None)
@given(configs(max_side=40), st.sampled_from(["random", "ties"]), st.integers(1, 64))
def test_host_read_shortcuts_do_not_change_results(config, kind, chunk):
    """The CPU's policy (host reads: finite sums settle the flag, gathered radix passes, no
    tie ranks when every tie is pruned, numpy sums) and the sync-free one give the same
    masks, scores and flags; small chunks and no kthvalue make the radix passes run."""
    shape, bs, zpb, level, norm, seed = config
    x = _data(shape, seed, kind)
    results = []
    for policy in (_policy.HOST_READS, _policy.SYNC_FREE):
        with _policy.forced(policy), pytest.MonkeyPatch.context() as m:
            m.setattr(torch_config, "CHUNK_ELEMENTS", chunk)
            m.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
            m.setattr(torch_config, "KTHVALUE_MAX_BLOCKS", 0)
            m.setattr(torch_config, "SEQUENTIAL_SUM_MIN", 4)
            mask, flag = kernels.block_mask_unchecked(x, level, bs, zpb, norm, backend="torch")
            results.append((mask, kernels.block_norm(x, bs, norm, backend="torch"), bool(flag)))
    (mask_a, norm_a, flag_a), (mask_b, norm_b, flag_b) = results
    assert torch.equal(mask_a, mask_b) and torch.equal(norm_a.view(torch.int32), norm_b.view(torch.int32))
    assert flag_a is flag_b is False


def test_policy_is_chosen_by_device_and_forced_only_inside_the_block():
    assert _policy.for_device(torch.device("cpu")) is _policy.HOST_READS
    assert _policy.for_device(torch.device("meta")) is _policy.SYNC_FREE
    with _policy.forced(_policy.SYNC_FREE):
        assert _policy.for_device(torch.device("cpu")) is _policy.SYNC_FREE
    assert _policy.for_device(torch.device("cpu")) is _policy.HOST_READS


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**31 - 1), st.sampled_from([3, 50, None]))
def test_kthvalue_threshold_equals_the_radix_threshold(n, seed, distinct):
    """The small-grid selection finds the radix passes' threshold exactly, ties included."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(1, n, generator=g) if distinct is None else torch.randint(0, distinct, (1, n), generator=g) / 7
    k = int(torch.randint(1, n + 1, (), generator=g))
    fast, radix = kthvalue_threshold(scores, k), select_threshold(scores, k)
    assert [int(v) for v in fast] == [int(v) for v in radix]
    assert fast.bits.dtype == radix.bits.dtype == torch.int32


@pytest.mark.skipif(DataNormSparsifier is None, reason="torch.ao data sparsifier not installed")
@settings(max_examples=120, deadline=None)
@given(
    st.integers(2, 40), st.integers(2, 40), st.integers(1, 6), st.integers(1, 6),
    st.floats(0, 1), st.sampled_from(["L1", "L2"]), st.integers(0, 2**31 - 1), st.data(),
)
def test_matches_torch_ao_reference_on_tie_free_data(h, w, bh, bw, level, norm, seed, data):
    zpb = data.draw(st.integers(0, bh * bw))
    x = torch.randn(h, w, generator=torch.Generator().manual_seed(seed))
    ref = DataNormSparsifier(sparsity_level=level, sparse_block_shape=(bh, bw), zeros_per_block=zpb, norm=norm)
    ref.add_data("w", x.clone())
    ref.step()
    expected = ref.get_mask("w").bool()
    assert torch.equal(kernels.block_mask(x, level, (bh, bw), zpb, norm, backend="torch"), expected)


@pytest.mark.skipif(DataNormSparsifier is None, reason="torch.ao data sparsifier not installed")
def test_reference_parity_at_benchmark_size():
    x = torch.randn(512, 1024, generator=torch.Generator().manual_seed(7))
    for zpb in (4, 2):
        ref = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=zpb)
        ref.add_data("w", x.clone())
        ref.step()
        assert torch.equal(kernels.block_mask(x, 0.5, (1, 4), zpb), ref.get_mask("w").bool())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("zpb", [None, 2])
def test_low_precision_inputs(dtype, norm, zpb):
    """Integer-valued data is exact in every dtype, so the brute force is exact too. (float64
    is refused: tests/kernels/test_edge_inputs.py.)"""
    x = torch.randint(-8, 9, (10, 22), generator=torch.Generator().manual_seed(3)).to(dtype)
    for level in (0.3, 0.5, 0.8):
        assert torch.equal(kernels.block_mask(x, level, (1, 4), zpb, norm), naive.block_mask(x, level, (1, 4), zpb, norm))


@settings(max_examples=50, deadline=None)
@given(configs())
def test_exact_number_of_pruned_blocks(config):
    shape, bs, _, level, norm, seed = config
    x = _data(shape, seed, "ties") + 5  # no zeros, so a pruned block is exactly an all-False block
    mask = naive.as_2d(kernels.block_mask(x, level, bs, None, norm))
    h, w = mask.shape
    blocks = torch.nn.functional.pad((~mask).float(), (0, -w % bs[1], 0, -h % bs[0]), value=1.0)
    fully_zeroed = torch.nn.functional.avg_pool2d(blocks[None, None], bs, bs)[0, 0] == 1.0
    assert int(fully_zeroed.sum()) == round(level * math.ceil(h / bs[0]) * math.ceil(w / bs[1]))


@settings(max_examples=50, deadline=None)
@given(configs(), st.sampled_from(["random", "ties"]))
def test_zeros_within_each_pruned_block(config, kind):
    shape, bs, zpb, level, norm, seed = config
    x = _data(shape, seed, kind) + 10  # no zeros in the data
    mask = naive.as_2d(kernels.block_mask(x, level, bs, zpb, norm))
    h, w = mask.shape
    z = bs[0] * bs[1] if zpb is None else zpb
    for i in range(math.ceil(h / bs[0])):
        for j in range(math.ceil(w / bs[1])):
            zeros = int((~mask[i * bs[0] : (i + 1) * bs[0], j * bs[1] : (j + 1) * bs[1]]).sum())
            count = len(naive.block_elements(h, w, bs[0], bs[1], i, j))
            assert zeros in (0, min(z, count))


@pytest.mark.parametrize(
    "shape, bs",
    [((0, 4), (1, 4)), ((3, 0), (1, 4)), ((0,), (1, 4)), ((3, 5), (8, 9)),
     ((1,), (1, 4)), ((6, 7), (1, 1)), ((4, 3, 3, 3), (2, 9))],
)
def test_edge_shapes(shape, bs):
    x = torch.randn(shape)
    mask = kernels.block_mask(x, 0.5, bs)
    assert mask.shape == x.shape and mask.dtype == torch.bool
    if x.numel():
        assert torch.equal(mask, naive.block_mask(x, 0.5, bs))
    assert kernels.block_norm(x, bs).shape == (
        math.ceil(naive.as_2d(x).shape[0] / bs[0]), math.ceil(naive.as_2d(x).shape[1] / bs[1]))


def test_sparsify_and_apply_mask():
    x = torch.randn(6, 5, 4)
    y, mask = kernels.sparsify(x, 0.5, (1, 4), 2)
    assert torch.equal(mask, kernels.block_mask(x, 0.5, (1, 4), 2))
    assert torch.equal(y, x * mask) and y.data_ptr() != x.data_ptr()
    assert torch.equal(kernels.apply_mask(x, mask), y)
    z = x.clone()
    assert kernels.apply_mask(z, mask.to(torch.int8), inplace=True) is z and torch.equal(z, y)


@pytest.mark.parametrize("make", [lambda: torch.randn(8, 12).t(), lambda: torch.randn(4, 6, 5).permute(2, 0, 1)])
def test_inplace_on_non_contiguous_data(make):
    x = make()
    expected_y, expected_mask = kernels.sparsify(x.contiguous(), 0.5, (2, 2), 1)
    y, mask = kernels.sparsify(x, 0.5, (2, 2), 1, inplace=True)
    assert y is x and torch.equal(x, expected_y) and torch.equal(mask, expected_mask)


def test_no_host_sync_on_the_mask_path(monkeypatch):
    """block_mask_unchecked must not pull values to the host where that stalls a device: with
    the CPU shortcuts off (as on a GPU), every way of reading a value raises."""
    x = torch.randn(64, 64)
    x[0, :8] = 0
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"host sync via {_n}"))
    with _policy.forced(_policy.SYNC_FREE):
        with_shortcuts_off = kernels.block_mask_unchecked(x, 0.5, (1, 4), 2, backend="torch")[0]
        kernels.block_mask_unchecked(x, 0.5, (2, 2), None, "L2", backend="torch")
    monkeypatch.undo()
    assert torch.equal(with_shortcuts_off, kernels.block_mask(x, 0.5, (1, 4), 2, backend="torch"))


def test_parameters_that_require_grad():
    w = torch.nn.Parameter(torch.randn(8, 16))
    mask = kernels.block_mask(w, 0.5, (1, 4), 2)
    y, _ = kernels.sparsify(w, 0.5, (1, 4), 2)
    assert not y.requires_grad and torch.equal(y, w.detach() * mask)
    assert kernels.apply_mask(w, mask, inplace=True) is w and torch.equal(w.detach(), y)
    assert kernels.block_norm(w).requires_grad is False


@pytest.mark.parametrize("host_reads", [True, False])
@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("zpb", [2, 4])
def test_non_finite_flag_is_exact_when_block_sums_overflow(host_reads, norm, zpb):
    """Block sums settle the flag when they are finite; an overflowing sum of finite data
    must not flag it, and a NaN or inf must, with or without the CPU shortcut."""
    x = torch.full((4, 8), 3e38)  # finite, but the sums of |x| (and of x*x) overflow
    x[0, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with _policy.forced(_policy.HOST_READS if host_reads else _policy.SYNC_FREE):
        mask, flag = kernels.block_mask_unchecked(x, 0.5, (1, 4), zpb, norm, backend="torch")
        assert not bool(flag)
        assert not mask[0, :zpb].any() and mask[0, zpb:4].all()  # the one finite block is pruned
        for poison in (float("nan"), float("inf")):
            y = torch.randn(4, 8)
            y[2, 5] = poison
            assert bool(kernels.block_mask_unchecked(y, 0.5, (1, 4), zpb, norm, backend="torch")[1])
