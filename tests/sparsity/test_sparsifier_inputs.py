"""Inputs the sparsifier refuses, at the call that receives them and without changing its state:
float64 data, 0-d tensors, malformed state dicts; ``squash_mask`` checks every tensor before it
writes any; the ramp schedulers refuse non-finite arguments."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import CubicSLScheduler, DataNormSparsifier, LinearSLScheduler


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_float64_is_refused_by_add_data_at_that_call():
    sparsifier = DataNormSparsifier(sparsity_level=0.5)
    with pytest.raises(TypeError, match=r"data 'w' is float64; add it as float32"):
        sparsifier.add_data("w", torch.ones(4, 8, dtype=torch.float64))
    assert "w" not in sparsifier.data_groups
    with pytest.raises(TypeError, match=r"data 'w' is float64"):
        DataNormSparsifier([("w", torch.nn.Parameter(torch.ones(4, 8, dtype=torch.float64)))])


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


def test_add_data_refuses_0_dim_tensors():
    sparsifier = DataNormSparsifier()
    with pytest.raises(ValueError, match="data 'w' must have at least 1 dimension"):
        sparsifier.add_data("w", torch.tensor(3.0))
    assert not sparsifier.data_groups


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
