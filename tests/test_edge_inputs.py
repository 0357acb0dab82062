"""Edge inputs an adversarial user tries (issue 14): float64 data, in-place writes to
overlapping memory, blocks far larger than the data, an atomic ``squash_mask``, and
errors that are ours (``TypeError``/``ValueError`` naming the argument, data untouched)."""

from __future__ import annotations

import math

import pytest
import torch

from blocksparsity import CubicSLScheduler, DataNormSparsifier, LinearSLScheduler, PostTrainingDataSparsity, kernels
from tests import naive
from tests.conftest import triton_devices

BACKENDS = ["torch"] + (["triton"] if "cpu" in triton_devices() else [])
DATA_OPS = {
    "block_norm": lambda x, b: kernels.block_norm(x, (1, 4), backend=b),
    "block_mask": lambda x, b: kernels.block_mask(x, 0.5, (1, 4), backend=b),
    "block_mask_unchecked": lambda x, b: kernels.block_mask_unchecked(x, 0.5, (1, 4), backend=b),
    "sparsify": lambda x, b: kernels.sparsify(x, 0.5, (1, 4), backend=b),
}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- 3. float64 is refused, by name
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(DATA_OPS))
def test_float64_is_refused_by_the_scoring_functions(op, backend):
    x = torch.tensor([[1 + 1e-12, 1.0, 5.0, 6.0], [2.0, 3.0, 4.0, 1e300]], dtype=torch.float64)
    before = x.clone()
    with pytest.raises(TypeError, match=r"x is float64; cast it to float32.*torch\.ao ranks float64"):
        DATA_OPS[op](x, backend)
    assert torch.equal(x, before)


def test_float64_is_masked_by_apply_mask():
    """apply_mask scores nothing, so float64 is fine there: x * mask exactly."""
    x = rand(4, 8).double()
    mask = rand(4, 8, seed=1) > 0
    assert torch.equal(kernels.apply_mask(x, mask), x * mask)


def test_float64_is_refused_by_add_data_at_that_call():
    sparsifier = DataNormSparsifier(sparsity_level=0.5)
    with pytest.raises(TypeError, match=r"data 'w' is float64; add it as float32"):
        sparsifier.add_data("w", torch.ones(4, 8, dtype=torch.float64))
    assert "w" not in sparsifier.data_groups
    with pytest.raises(TypeError, match=r"data 'w' is float64"):
        DataNormSparsifier([("w", torch.nn.Parameter(torch.ones(4, 8, dtype=torch.float64)))])


# ---------------------------------------------------------------- 4. in place on overlapping memory
@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_on_an_expanded_tensor_is_refused(backend):
    base = rand(1, 8)
    x = base.expand(4, 8)
    with pytest.raises(ValueError, match=r"^x has overlapping memory"):
        kernels.sparsify(x, 0.25, (1, 4), inplace=True, backend=backend)
    with pytest.raises(ValueError, match=r"^x has overlapping memory"):
        kernels.apply_mask(x, torch.ones(4, 8, dtype=torch.bool), inplace=True, backend=backend)
    assert torch.equal(base, rand(1, 8))
    y, mask = kernels.sparsify(x, 0.25, (1, 4), backend=backend)  # out of place is fine
    assert torch.equal(y, x * mask) and torch.equal(mask, kernels.block_mask(x.contiguous(), 0.25, (1, 4)))


def test_overlap_detection():
    t = rand(6, 8)
    strided = torch.empty(100).as_strided((3, 4), (2, 3))  # offsets 0..14, 6 = 2*3 = 3*2 collide
    woven = torch.empty(100).as_strided((2, 3), (1, 2))  # 0, 2, 4 and 1, 3, 5: no overlap
    interleaved = torch.empty(100).as_strided((3, 2), (2, 3))  # 0, 3; 2, 5; 4, 7: distinct, but not provably
    assert not any(kernels.api.may_overlap(v) for v in (t, t.t(), t[:, ::2], t[::3], t[1:, 2:], t.unsqueeze(1), woven))
    assert all(kernels.api.may_overlap(v) for v in (t[:1].expand(3, 8), t[:, :1].expand(6, 5), strided))
    assert kernels.api.may_overlap(interleaved)  # refused conservatively (as_strided only)
    assert not kernels.api.may_overlap(torch.empty(1, 1).expand(1, 1))


# ---------------------------------------------------------------- 6. blocks far larger than the data
@pytest.mark.parametrize("shape, bs", [((4, 8), (1000, 1000)), ((512, 512), (512, 512)), ((4, 8), (10**5, 10**5)),
                                       ((3, 70), (2, 10**9)), ((37,), (5, 100))])
def test_block_larger_than_the_tensor_is_one_partial_block(shape, bs):
    """Cost bounded by the data (these ran for seconds or asked for 40 GB before); results
    as the brute force defines them: one block per dim it covers, mean over its elements."""
    x = rand(*shape, seed=sum(shape))
    if x.numel() <= 4096:
        for norm in ("L1", "L2"):  # the brute force scores in float64
            torch.testing.assert_close(kernels.block_norm(x, bs, norm, backend="torch").double(),
                                       naive.block_norm(x, bs, norm), rtol=1e-5, atol=0)
    h, w = naive.as_2d(x).shape
    clipped = (min(bs[0], h), min(bs[1], w))
    scores = kernels.block_norm(x, bs, backend="torch")
    assert scores.shape == (math.ceil(h / bs[0]), math.ceil(w / bs[1]))
    assert torch.equal(scores, kernels.block_norm(x, clipped, backend="torch"))
    for zpb in (None, 3, 1000):
        zpb = None if zpb is not None and zpb > bs[0] * bs[1] else zpb
        for level in (0.0, 0.5, 1.0):
            mask = kernels.block_mask(x, level, bs, zpb, backend="torch")
            if x.numel() <= 4096:
                assert torch.equal(mask, naive.block_mask(x, level, bs, zpb, "L1"))
            z = None if zpb is None else min(zpb, clipped[0] * clipped[1])
            assert torch.equal(mask, kernels.block_mask(x, level, clipped, z, backend="torch"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_block_on_every_backend(backend):
    """The API clips the block before any backend: Triton compiles a kernel for the tensor's
    size, not for 10**10 positions (its int32 loop bound would overflow)."""
    x = rand(3, 5, seed=4)
    expected = naive.block_mask(x, 1.0, (3, 5), 4, "L1")
    assert torch.equal(kernels.block_mask(x, 1.0, (10**5, 10**5), 4, backend=backend), expected)
    y, mask = kernels.sparsify(x, 1.0, (10**5, 10**5), 4, backend=backend)
    assert torch.equal(mask, expected) and torch.equal(y, x * expected)


@pytest.mark.parametrize("bs", [(8, 9), (16, 16), (3, 40), (64, 64)])
def test_large_blocks_sum_in_order(bs):
    """Blocks of more than SEQUENTIAL_SUM_MIN elements are summed another way (numpy's
    float32 accumulate): the same bits as the one-position-at-a-time sum, partial edges too."""
    from blocksparsity.kernels._common import block_grid
    from blocksparsity.kernels._torch import _blocks, _policy
    from blocksparsity.kernels._torch.block_norm import block_sums, blocked_sums

    x = rand(150, 170, seed=9) * torch.linspace(1e-3, 1e3, 170)
    h, w = x.shape
    for norm in ("L1", "L2"):
        v = x.abs() if norm == "L1" else x * x
        blocked = _blocks.blocked(v, *block_grid((h, w), bs), *bs, 0.0)
        loop = block_sums(_blocks.positions(blocked))
        assert torch.equal(blocked_sums(blocked.clone(), _policy.HOST_READS).view(torch.int32), loop.view(torch.int32))
        count = (_blocks.counts_inside(blocked.shape[0], bs[0], h, 0, x.device)[:, None]
                 * _blocks.counts_inside(blocked.shape[2], bs[1], w, 0, x.device))
        assert torch.equal(kernels.block_norm(x, bs, norm, backend="torch"), loop / count)


# ---------------------------------------------------------------- 5. squash_mask is atomic
def test_squash_mask_checks_every_tensor_before_writing_any():
    a, b, c = rand(4, 8), rand(4, 8, seed=1), rand(4, 8, seed=2)
    sparsifier = DataNormSparsifier([("a", a), ("b", b), ("c", c)], sparsity_level=0.5)
    sparsifier.step()
    b[1, 1] = float("inf")  # bad after the step
    before = [t.clone() for t in (a, b, c)]
    with pytest.raises(ValueError, match=r"\['b'\] hold NaN or infinite values; no mask was squashed"):
        sparsifier.squash_mask()
    assert all(torch.equal(t, u) for t, u in zip((a, b, c), before, strict=True))
    assert sparsifier.get_data("a") is a  # not squashed: the original is still there
    b[1, 1] = 0.0
    sparsifier.squash_mask()
    assert torch.equal(a, before[0] * sparsifier.get_mask("a"))


def test_squash_mask_refuses_overlapping_data_before_writing():
    good, base = rand(4, 8), rand(1, 8)
    sparsifier = DataNormSparsifier([("good", good), ("expanded", base.expand(4, 8))], sparsity_level=0.5)
    sparsifier.step()
    before = good.clone()
    with pytest.raises(ValueError, match=r"data 'expanded' has overlapping memory"):
        sparsifier.squash_mask()
    assert torch.equal(good, before)


@pytest.mark.parametrize("names, error, match", [
    ("a", TypeError, r"names must be a list of data names \(e\.g\. \['a'\]\)"),
    (b"a", TypeError, "names must be a list"),
    (5, TypeError, "names must be a list"),
    ([1], TypeError, "names must hold strs"),
    (["a", "nope"], KeyError, "no data named 'nope'"),
])
def test_squash_mask_names(names, error, match):
    a = rand(4, 8)
    sparsifier = DataNormSparsifier([("a", a)], sparsity_level=0.5)
    sparsifier.step()
    before = a.clone()
    with pytest.raises(error, match=match):
        sparsifier.squash_mask(names=names)
    assert torch.equal(a, before)


# ---------------------------------------------------------------- 9. our errors, at the call that receives the input
def _sparse_and_meta():
    x = rand(4, 8)
    return {"coo": x.to_sparse(), "csr": x.to_sparse_csr(), "meta": torch.empty(4, 8, device="meta")}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["coo", "csr", "meta"])
def test_sparse_and_meta_tensors(kind, backend):
    x = _sparse_and_meta()[kind]
    error, match = (ValueError, "x is a meta tensor") if kind == "meta" else (TypeError, "x must be a dense")
    for op in DATA_OPS.values():
        with pytest.raises(error, match=match):
            op(x, backend)
    with pytest.raises(error, match=match):
        kernels.apply_mask(x, torch.ones(4, 8, dtype=torch.bool), backend=backend)
    if kind != "meta":
        with pytest.raises(TypeError, match="mask must be a dense"):
            kernels.apply_mask(rand(4, 8), torch.ones(4, 8, dtype=torch.bool).to_sparse(), backend=backend)
    error, match = (ValueError, "data 'w' is a meta tensor") if kind == "meta" else (TypeError, "data 'w' must be a dense")
    with pytest.raises(error, match=match):
        DataNormSparsifier().add_data("w", x)


def test_add_data_refuses_0_dim_tensors():
    sparsifier = DataNormSparsifier()
    with pytest.raises(ValueError, match="data 'w' must have at least 1 dimension"):
        sparsifier.add_data("w", torch.tensor(3.0))
    assert not sparsifier.data_groups


@pytest.mark.parametrize("block_shape", [b"\x01\x04", bytearray(b"\x01\x04")])
def test_bytes_are_not_a_block_shape(block_shape):
    with pytest.raises(TypeError, match="block_shape must be a pair of ints"):
        kernels.block_mask(rand(4, 8), 0.5, block_shape)
    with pytest.raises(TypeError, match="sparse_block_shape"):
        DataNormSparsifier(sparse_block_shape=block_shape)


def _good_state():
    sparsifier = DataNormSparsifier([("w", rand(4, 8))], sparsity_level=0.5)
    sparsifier.step()
    return sparsifier.state_dict()


def _malformed(edit):
    sd = _good_state()
    edit(sd)
    return sd


def _set(*path_and_value):
    """An edit of a state dict: set sd[path...] = value."""
    *path, key, value = path_and_value

    def edit(sd):
        for p in path:
            sd = sd[p]
        sd[key] = value
    return edit


MALFORMED = [
    ("data_groups not a dict", _set("data_groups", [1]), TypeError, r"state_dict\['data_groups'\] must be a dict"),
    ("state not a dict", _set("state", 5), TypeError, r"state_dict\['state'\] must be a dict"),
    ("config not a dict", _set("data_groups", "w", 3), TypeError, r"state_dict\['data_groups'\]\['w'\] must be a dict"),
    ("state entry not a dict", _set("state", "w", 5), TypeError, r"state_dict\['state'\]\['w'\] must be a dict"),
    ("mask not a tensor", _set("state", "w", "mask", [[True]]), TypeError, r"\['mask'\] must be a torch\.Tensor"),
    ("container not a dict", _set("_container", [1]), TypeError, r"state_dict\['_container'\] must be a dict"),
    ("data not a tensor", _set("_container", "w", [1.0]), TypeError, r"\['_container'\]\['w'\] must be a torch\.Tensor"),
    ("int64 data", _set("_container", "w", torch.ones(4, 8, dtype=torch.int64)), TypeError, "data 'w' must be floating"),
    ("float64 data", _set("_container", "w", torch.ones(4, 8, dtype=torch.float64)), TypeError, "data 'w' is float64"),
    ("0-d data", _set("_container", "w", torch.tensor(1.0)), ValueError, "data 'w' must have at least 1 dimension"),
    ("squashed a str", _set("squashed", "w"), TypeError, r"state_dict\['squashed'\] must be a list of names"),
]


@pytest.mark.parametrize("what, edit, error, match", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_load_state_dict_with_malformed_input(what, edit, error, match):
    target = DataNormSparsifier([("v", rand(2, 8, seed=5))], sparsity_level=0.25)
    before = target.state_dict()
    with pytest.raises(error, match=match):
        target.load_state_dict(_malformed(edit))
    after = target.state_dict()
    assert list(after["state"]) == ["v"] and torch.equal(after["_container"]["v"], before["_container"]["v"])


RAMP_ARGS = [
    ("delta_t", float("nan"), ValueError), ("total_t", float("nan"), ValueError), ("init_t", float("nan"), ValueError),
    ("init_sl", float("inf"), ValueError), ("total_t", float("inf"), ValueError), ("init_t", "0", TypeError),
    ("init_sl", None, TypeError), ("total_t", True, TypeError),
]


@pytest.mark.parametrize("scheduler, arg, value, error", [(CubicSLScheduler, *a) for a in RAMP_ARGS]
                         + [(LinearSLScheduler, *a) for a in RAMP_ARGS if a[0] != "delta_t"])
def test_ramp_schedulers_refuse_non_finite_arguments(scheduler, arg, value, error):
    sparsifier = DataNormSparsifier([("w", rand(4, 8))], sparsity_level=0.5)
    with pytest.raises(error, match=rf"^{arg} must be"):
        scheduler(sparsifier, **{arg: value})
    assert sparsifier.data_groups["w"]["sparsity_level"] == 0.5


@pytest.mark.parametrize("kwargs, error, match", [
    ({"verify_ranks": "yes"}, TypeError, "verify_ranks must be True or False; got 'yes'"),
    ({"verify_ranks": 1}, TypeError, "verify_ranks must be True or False"),
    ({"print_table": None}, TypeError, "print_table must be True or False; got None"),
    ({"sparsified_device": "nodevice"}, ValueError, "sparsified_device must name a device .*'nodevice'"),
    ({"sparsified_device": "cuda:x"}, ValueError, "sparsified_device must name a device"),
    ({"sparsified_device": 1.5}, TypeError, "sparsified_device must be a torch.device"),
])
def test_callback_flags_and_device_are_checked_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, **kwargs)


def test_callback_good_device_and_flags():
    cb = PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, sparsified_device="cpu",
                                  verify_ranks=False, print_table=False)
    assert cb.sparsified_device == torch.device("cpu") and cb.verify_ranks is False and cb.print_table is False


def test_sparsify_state_dict_keeps_float64_with_its_reason():
    from blocksparsity.checkpoint import sparsify_state_dict

    state = {"w64": rand(64, 64).double(), "w32": rand(64, 64)}
    out, records = sparsify_state_dict(state, 0.5)
    why = {r.name: (r.pruned, r.reason) for r in records}
    assert why["w64"] == (False, "dtype float64 (scores are float32: cast to float32 to prune it)")
    assert out["w64"] is state["w64"] and why["w32"] == (True, "pruned")
