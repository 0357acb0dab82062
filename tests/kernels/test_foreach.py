"""``foreach_block_mask``: the masks of many tensors in one call, equal to ``block_mask`` on
each; its arguments (one value or one per tensor), its errors (naming the argument and the
tensor's index, raised before any work) and its non-finite flags."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels import _dispatch, _torch
from blocksparsity.kernels._torch import _config as torch_config
from tests.helpers.devices import triton_devices

BACKENDS = ["torch", *(["triton"] if triton_devices() else [])]
# Where each backend's cases run: Triton on its device (CUDA, or CPU tensors in its interpreter).
DEVICE = {"torch": "cpu", "triton": (triton_devices() or ["cpu"])[0]}


def _mixed(seed: int = 0) -> list[tuple[torch.Tensor, float, tuple[int, int], int | None]]:
    """(x, level, block shape, zeros_per_block) of mixed shapes, dtypes, block shapes and levels."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    ties = torch.ones(6, 8)
    ties[1] = 2.0
    int_valued = torch.randint(-3, 4, (16, 12), generator=g).float()
    return [
        (r(8, 16), 0.5, (1, 4), 2),
        (r(8, 16), 0.5, (1, 4), 2),  # same configuration: one group
        (r(9, 13, dtype=torch.float16), 0.3, (1, 4), 3),  # partial blocks
        (r(7, 10, dtype=torch.bfloat16), 1.0, (2, 2), None),
        (r(5, 6), 0.0, (1, 4), 2),
        (r(4), 0.5, (1, 4), 1),  # 1-D
        (r(3, 2, 3, 3), 0.6, (1, 4), 2),  # N-D: (3, 18)
        (r(1), 1.0, (1, 4), None),  # one element, block clipped to (1, 1)
        (r(0, 5), 0.5, (1, 4), 2),  # empty
        (ties, 0.5, (1, 4), 2),  # ties between blocks and inside blocks
        (int_valued, 0.4, (2, 4), 5),
        (r(33, 40), 0.7, (1, 8), 6),
        (r(12, 12, dtype=torch.float16), 0.5, (3, 3), 4),  # 9-element blocks: pairwise ranks
        (r(40, 40), 0.5, (5, 5), 7),  # 25-element blocks: sorted ranks
        (r(2, 3), 0.5, (8, 8), None),  # block larger than the tensor
    ]


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_equal_block_mask_on_each_tensor(norm, backend):
    cases = _mixed()
    xs, levels, shapes, zpbs = (list(t) for t in zip(*cases, strict=True))
    on_device = [x.to(DEVICE[backend]) for x in xs]
    masks = kernels.foreach_block_mask(on_device, levels, shapes, zpbs, norm, backend=backend)
    assert len(masks) == len(xs)
    for i, (x, level, bs, zpb) in enumerate(cases):
        expected = kernels.block_mask(on_device[i], level, bs, zpb, norm, backend=backend)
        assert masks[i].dtype == torch.bool and masks[i].shape == x.shape and masks[i].device == on_device[i].device
        assert torch.equal(masks[i], expected), i
        assert torch.equal(masks[i].cpu(), kernels.block_mask(x, level, bs, zpb, norm, backend="torch")), i


def test_one_value_for_all_tensors():
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(8, 8, generator=g), torch.randn(3, 20, generator=g), torch.randn(10, generator=g)]
    masks = kernels.foreach_block_mask(xs, 0.5, (1, 4), 2)
    assert all(torch.equal(m, kernels.block_mask(x, 0.5, (1, 4), 2)) for x, m in zip(xs, masks, strict=True))
    masks = kernels.foreach_block_mask(tuple(xs), [0.0, 1.0, 0.5], [(1, 4), (2, 2), (1, 2)])
    assert torch.equal(masks[0], torch.ones(8, 8, dtype=torch.bool))
    assert torch.equal(masks[1], kernels.block_mask(xs[1], 1.0, (2, 2)))


@pytest.mark.parametrize("form", ["column", "row", "element", "one", "shared"])
def test_scales_equal_block_mask_with_scale(form):
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g).half(), torch.randn(5, 7, generator=g)]
    shapes = {"column": lambda h, w: (1, w), "row": lambda h, w: (h, 1), "element": lambda h, w: (h, w),
              "one": lambda h, w: ()}
    if form == "shared":
        scales = torch.rand((), generator=g) + 0.5
        per = [scales] * 3
    else:
        per = [torch.rand(shapes[form](*x.shape), generator=g) * 3 for x in xs]
        per[2] = None  # a tensor without a scale: its own group
        scales = per
    for norm in ("L1", "L2"):
        masks = kernels.foreach_block_mask(xs, 0.5, (1, 4), 2, norm, scales=scales)
        for x, s, m in zip(xs, per, masks, strict=True):
            assert torch.equal(m, kernels.block_mask(x, 0.5, (1, 4), 2, norm, scale=s))


def test_empty_list_gives_empty_list():
    assert kernels.foreach_block_mask([], 0.5) == []
    assert kernels.foreach_block_mask_unchecked([], [], []) == ([], [])


def test_each_backend_batches_a_group_in_one_call(monkeypatch):
    """Tensors sharing a configuration reach the backend's ``block_mask_group`` together (one
    call per group), not ``block_mask`` one by one."""
    calls = []
    for backend in BACKENDS:
        impl = _dispatch.resolve(backend, torch.device(DEVICE[backend]))
        group = impl.block_mask_group

        def counted(xs, *args, _group=group, **kwargs):
            calls.append(len(xs))
            return _group(xs, *args, **kwargs)

        monkeypatch.setattr(impl, "block_mask_group", counted)
        monkeypatch.setattr(impl, "block_mask", None)  # a per-tensor call would fail
        xs = [torch.randn(8, 16), torch.randn(4, 4), torch.randn(3, 9)]
        masks = kernels.foreach_block_mask([x.to(DEVICE[backend]) for x in xs], 0.5, (1, 4), 2, backend=backend)
        monkeypatch.undo()
        assert calls == [3], backend
        calls.clear()
        for x, m in zip(xs, masks, strict=True):
            assert torch.equal(m.cpu(), kernels.block_mask(x, 0.5, (1, 4), 2, backend="torch"))


def test_group_and_per_tensor_paths_agree_at_every_size(monkeypatch):
    """Lowering the batched path's size limit sends the same tensors down the per-tensor path."""
    cases = _mixed(2)
    xs, levels, shapes, zpbs = (list(t) for t in zip(*cases, strict=True))
    batched = kernels.foreach_block_mask(xs, levels, shapes, zpbs)
    monkeypatch.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
    per_tensor = kernels.foreach_block_mask(xs, levels, shapes, zpbs)
    assert all(torch.equal(a, b) for a, b in zip(batched, per_tensor, strict=True))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(sparsity_levels=[0.5, 0.5, 1.5]), ValueError, r"tensors\[2\]: sparsity_level"),
        (dict(sparsity_levels=[0.5, 0.5]), ValueError, "sparsity_levels has 2 entries"),
        (dict(sparsity_levels="0.5"), TypeError, "sparsity_levels"),
        (dict(block_shapes=[(1, 4), (0, 4), (1, 4)]), ValueError, r"tensors\[1\]: block_shape"),
        (dict(block_shapes=[(1, 4)]), ValueError, "block_shapes has 1 entries"),
        (dict(zeros_per_block=[2, 2, 9]), ValueError, r"tensors\[2\]: zeros_per_block"),
        (dict(zeros_per_block=5), ValueError, r"tensors\[0\]: zeros_per_block"),
        (dict(norm="L3"), ValueError, "norm"),
        (dict(backend="cuda"), ValueError, "backend"),
        (dict(scales=[None, torch.ones(3), None]), ValueError, r"tensors\[1\]: scale must broadcast"),
        (dict(scales=[None, None, -torch.ones(8)]), ValueError, r"tensors\[2\]: scale must be finite"),
        (dict(tensors=[torch.randn(4, 4), "x", torch.randn(4, 4)]), TypeError, r"tensors\[1\] must be a torch.Tensor"),
        (dict(tensors=[torch.randn(4, 4), torch.randn(4, 4).double(), torch.randn(4, 4)]), TypeError,
         r"tensors\[1\] is float64"),
        (dict(tensors=torch.randn(3, 4, 4)), TypeError, "tensors must be a list"),
    ],
)
def test_bad_arguments_name_the_argument_and_index_before_any_work(kwargs, error, match, monkeypatch):
    def no_work(*args, **kw):
        raise AssertionError("a backend ran before every argument was checked")

    monkeypatch.setattr(_torch, "block_mask_group", no_work)
    monkeypatch.setattr(_torch, "block_mask", no_work)
    args = dict(tensors=[torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)], sparsity_levels=0.5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        kernels.foreach_block_mask(**args)


def test_non_finite_tensors_are_named_after_one_check():
    xs = [torch.randn(4, 8) for _ in range(4)]
    xs[1][0, 0] = float("nan")
    xs[3][2, 5] = float("inf")
    with pytest.raises(ValueError, match=r"tensors\[1\], tensors\[3\] hold NaN"):
        kernels.foreach_block_mask(xs, 0.5)
    masks, flags = kernels.foreach_block_mask_unchecked(xs, 0.5)
    assert [bool(f) for f in flags] == [False, True, False, True]
    assert all(f.shape == () and f.dtype == torch.bool for f in flags)
    assert torch.equal(masks[0], kernels.block_mask(xs[0], 0.5))


def test_a_finite_tensor_whose_block_sums_overflow_is_not_flagged():
    x = torch.full((4, 8), 3e38)
    masks, flags = kernels.foreach_block_mask_unchecked([x, torch.randn(4, 8)], 0.5, (1, 4), 2, "L2")
    assert not any(bool(f) for f in flags)
    assert torch.equal(masks[0], kernels.block_mask(x, 0.5, (1, 4), 2, "L2"))


def test_a_scale_is_checked_again_after_it_changes_in_place():
    x, scale = torch.randn(4, 8), torch.rand(8) + 0.1
    kernels.foreach_block_mask([x], 0.5, scales=scale)
    scale[3] = -1.0  # bumps its version: checked again, refused
    with pytest.raises(ValueError, match="scale must be finite"):
        kernels.foreach_block_mask([x], 0.5, scales=scale)


def test_sparsifier_step_with_scales_equals_block_mask_with_scale():
    from blocksparsity import DataNormSparsifier

    g = torch.Generator().manual_seed(9)
    data = [(f"w{i}", torch.randn(6, 16, generator=g)) for i in range(4)]
    s = DataNormSparsifier(data, sparsity_level=0.5, zeros_per_block=2)
    scales = {"w1": torch.rand(16, generator=g), "w3": torch.rand(6, 1, generator=g)}
    for name, scale in scales.items():
        s.set_scale(name, scale)
    s.step()
    for name, x in data:
        assert torch.equal(s.get_mask(name), kernels.block_mask(x, 0.5, (1, 4), 2, scale=scales.get(name)))


def test_remembered_configs_still_refuse_bad_values_and_follow_changes():
    """The checked per-tensor configurations are remembered between calls; a bad value is
    refused every time (naming the argument and tensor), a value of another type is checked
    anew (``True == 1``), and a changed level or shape gives the masks ``block_mask`` gives."""
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(8, 16, generator=g), torch.randn(4, 12, generator=g)]
    for _ in range(2):  # the second round answers the good configurations from memory
        assert all(torch.equal(m, kernels.block_mask(x, 0.5, (1, 4), 2))
                   for m, x in zip(kernels.foreach_block_mask(xs, 0.5, (1, 4), 2), xs, strict=True))
        with pytest.raises(ValueError, match=r"tensors\[1\].*sparsity_level"):
            kernels.foreach_block_mask(xs, [0.5, 1.5], (1, 4), 2)
        with pytest.raises(TypeError, match=r"tensors\[0\].*sparsity_level"):
            kernels.foreach_block_mask(xs, [True, 1], (1, 4), 2)
        with pytest.raises(ValueError, match=r"tensors\[0\].*zeros_per_block"):
            kernels.foreach_block_mask(xs, 1, (1, 4), [5, 2])
        with pytest.raises(ValueError, match=r"tensors\[0\].*sparsity_level"):
            kernels.foreach_block_mask(xs, [float("nan"), 0.5], (1, 4), 2)
    for level, block_shape, zpb in [(0.75, (1, 4), 2), (1, (2, 2), None), (0.25, (1, 8), 3)]:
        ys = [torch.randn(8, 16, generator=g), torch.randn(5, 12, generator=g)]  # a changed shape too
        for m, y in zip(kernels.foreach_block_mask(ys, level, block_shape, zpb), ys, strict=True):
            assert torch.equal(m, kernels.block_mask(y, level, block_shape, zpb))


def test_levels_are_checked_at_every_call_when_the_block_config_is_remembered():
    """A block shape and zeros_per_block seen before are answered from the cache; the level,
    which a schedule moves at every update, is still checked (and first: its error wins)."""
    x = torch.randn(8, 16)
    for level in (0.25, 0.5, 0.75):  # the same block config, new levels: the same masks as block_mask
        assert torch.equal(kernels.foreach_block_mask([x], level, (1, 4), 2)[0], kernels.block_mask(x, level, (1, 4), 2))
    with pytest.raises(ValueError, match=r"tensors\[0\]: sparsity_level must be between 0 and 1"):
        kernels.foreach_block_mask([x], 1.5, (1, 4), 2)
    with pytest.raises(TypeError, match=r"tensors\[0\]: sparsity_level must be a real number"):
        kernels.foreach_block_mask([x], True, (1, 4), 2)
    with pytest.raises(ValueError, match=r"tensors\[0\]: sparsity_level"):
        kernels.foreach_block_mask([x], -1.0, (0, 4), 2)  # both bad: the level is named
    with pytest.raises(ValueError, match=r"tensors\[0\]: zeros_per_block"):
        kernels.foreach_block_mask([x], 0.5, (1, 4), 9)
