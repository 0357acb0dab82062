"""blocksparsity.DataNormSparsifier / BaseDataSparsifier: torch.ao's contract, exact masks,
state round trips, invariants and bad input."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import blocksparsity
from blocksparsity import DataNormSparsifier, UnknownDataError
from blocksparsity.kernels import naive

try:
    from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as RefSparsifier
except ImportError:  # pragma: no cover
    RefSparsifier = None
needs_reference = pytest.mark.skipif(RefSparsifier is None, reason="torch.ao data sparsifier not installed")


def model_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    emb, bag = nn.Embedding(50, 12), nn.EmbeddingBag(40, 16)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(50, 12, generator=g))
        bag.weight.copy_(torch.randn(40, 16, generator=g))
    return [
        ("linear_weight", nn.Parameter(torch.randn(24, 36, generator=g))),
        ("raw", torch.randn(17, 30, generator=g)),
        ("emb", emb),
        ("bag", bag),
    ]


def weight(data):
    return data.weight if isinstance(data, (nn.Embedding, nn.EmbeddingBag)) else data


# ------------------------------------------------------------------ parity with torch.ao
@needs_reference
@pytest.mark.parametrize("config", [
    dict(sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=4),
    dict(sparsity_level=0.3, sparse_block_shape=(2, 3), zeros_per_block=2),
    dict(sparsity_level=0.8, sparse_block_shape=(1, 4), zeros_per_block=2, norm="L2"),
])
def test_masks_and_data_equal_torch_ao(config):
    data = model_data()
    ours, ref = DataNormSparsifier(data, **config), RefSparsifier(data, **config)
    ours.step()
    ref.step()
    for name, _ in data:
        assert torch.equal(ours.get_mask(name), ref.get_mask(name).bool()), name
        assert torch.equal(ours.get_data(name), ref.get_data(name))
        assert torch.equal(ours.get_data(name, return_original=False), ref.get_data(name, return_original=False))


@needs_reference
@pytest.mark.parametrize("leave_parametrized", [True, False])
def test_squash_mask_matches_torch_ao(leave_parametrized):
    ours_data, ref_data = model_data(1), model_data(1)
    ours, ref = DataNormSparsifier(ours_data, zeros_per_block=2), RefSparsifier(ref_data, zeros_per_block=2)
    ours.step()
    ref.step()
    ours.squash_mask(leave_parametrized=leave_parametrized)
    ref.squash_mask(leave_parametrized=leave_parametrized)
    for (name, a), (_, b) in zip(ours_data, ref_data, strict=True):
        assert torch.equal(ours.get_data(name, return_original=False), ref.get_data(name, return_original=False))
        assert torch.equal(weight(a), weight(b)), name  # the user's tensors themselves
        with pytest.raises(ValueError, match="squashed"):
            ours.get_data(name, return_original=True)


def test_squash_writes_into_the_callers_tensor():
    layer = nn.Linear(16, 8)
    s = DataNormSparsifier([("w", layer.weight)], sparsity_level=0.5)
    s.step()
    s.squash_mask()
    assert torch.equal(layer.weight.detach(), layer.weight.detach() * s.get_mask("w"))
    assert (layer.weight == 0).float().mean().item() == pytest.approx(0.5)


def test_one_dimensional_and_conv_data_keep_their_shape():
    data = [("bias", torch.randn(30)), ("conv", torch.randn(8, 3, 3, 3))]
    s = DataNormSparsifier(data, sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=2)
    s.step()
    for name, x in data:
        assert s.get_mask(name).shape == x.shape
        assert torch.equal(s.get_mask(name), naive.block_mask(x, 0.5, (1, 4), 2))


# ------------------------------------------------------------------ state
def _masks(s):
    return {name: s.get_mask(name).clone() for name in s.data_groups}


def test_state_dict_round_trip_gives_the_same_masks_after_step():
    data = model_data(2)
    s = DataNormSparsifier(data, sparsity_level=0.4, zeros_per_block=3)
    s.add_data("special", torch.randn(9, 9), sparsity_level=0.9, sparse_block_shape=(3, 3))
    s.step()
    sd = s.state_dict()
    fresh = DataNormSparsifier()
    fresh.load_state_dict(sd)
    assert fresh.data_groups == s.data_groups
    assert all(torch.equal(m, fresh.get_mask(n)) for n, m in _masks(s).items())
    s.step()
    fresh.step()
    assert all(torch.equal(m, fresh.get_mask(n)) for n, m in _masks(s).items())


def test_state_dict_without_data_reattaches_to_data_already_here():
    data = model_data(3)
    s = DataNormSparsifier(data, sparsity_level=0.6)
    s.step()
    fresh = DataNormSparsifier(model_data(3), sparsity_level=0.1)
    fresh.load_state_dict(s.state_dict(with_data=False))
    assert fresh.data_groups == s.data_groups
    assert all(torch.equal(m, fresh.get_mask(n)) for n, m in _masks(s).items())


def test_non_strict_load_keeps_entries_already_here():
    s = DataNormSparsifier([("a", torch.randn(8, 8))], sparsity_level=0.5)
    other = DataNormSparsifier([("a", torch.randn(8, 8)), ("b", torch.randn(4, 8))], sparsity_level=0.25)
    other.step()
    s.load_state_dict(other.state_dict(), strict=False)
    assert s.data_groups["a"]["sparsity_level"] == 0.5 and "b" in s.data_groups


@needs_reference
def test_loads_a_torch_ao_state_dict():
    data = model_data(4)
    ref = RefSparsifier(data, sparsity_level=0.5, zeros_per_block=2)
    ref.step()
    ours = DataNormSparsifier()
    ours.load_state_dict(ref.state_dict())
    for name, _ in data:
        assert torch.equal(ours.get_mask(name), ref.get_mask(name).bool())
        assert torch.equal(ours.get_data(name), ref.get_data(name))


def test_pickling_round_trip_with_a_scheduler_attached():
    s = DataNormSparsifier(model_data(5), sparsity_level=0.25)
    blocksparsity.StepSLScheduler(s)
    s.step()
    restored = pickle.loads(pickle.dumps(s))
    assert restored.data_groups == s.data_groups
    assert all(torch.equal(m, restored.get_mask(n)) for n, m in _masks(s).items())
    restored.step()
    assert all(torch.equal(m, restored.get_mask(n)) for n, m in _masks(s).items())


# ------------------------------------------------------------------ invariants
configs = st.tuples(
    st.integers(1, 20), st.integers(1, 20), st.integers(1, 5), st.integers(1, 5),
    st.floats(0, 1), st.integers(0, 2**31 - 1), st.data(),
)


@settings(max_examples=60, deadline=None)
@given(configs)
def test_invariants(config):
    h, w, bh, bw, level, seed, data = config
    zpb = data.draw(st.one_of(st.none(), st.integers(0, bh * bw)))
    x = torch.randint(-3, 4, (h, w), generator=torch.Generator().manual_seed(seed)).float() + 10  # ties, no zeros
    s = DataNormSparsifier([("x", x)], sparsity_level=level, sparse_block_shape=(bh, bw), zeros_per_block=zpb)
    s.step()
    mask = s.get_mask("x")
    assert mask.shape == x.shape and mask.dtype == torch.bool
    z = bh * bw if zpb is None else zpb
    zeroed_blocks = 0
    for i in range(math.ceil(h / bh)):
        for j in range(math.ceil(w / bw)):
            zeros = int((~mask[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]).sum())
            count = len(naive.block_elements(h, w, bh, bw, i, j))
            assert zeros in (0, min(z, count))
            zeroed_blocks += zeros > 0
    if z > 0:
        assert zeroed_blocks == round(level * math.ceil(h / bh) * math.ceil(w / bw))
    s.step()  # idempotent on unchanged data
    assert torch.equal(s.get_mask("x"), mask)


def test_level_above_one_prunes_everything_with_one_warning():
    s = DataNormSparsifier([("a", torch.randn(8, 8)), ("b", torch.randn(8, 8))], sparsity_level=2.0)
    with pytest.warns(UserWarning, match="above 1") as record:
        s.step()
        s.step()
    assert len([r for r in record if "above 1" in str(r.message)]) == 1
    assert not s.get_mask("a").any() and not s.get_mask("b").any()


@pytest.mark.parametrize("level", [-0.5, float("nan"), float("inf"), "0.5", True, None])
def test_a_bad_scheduled_level_fails_at_step_and_changes_no_mask(level):
    """Schedulers write levels straight into the configs: the level rule is checked again
    where masks are made (the same rule and message as when a config is stored)."""
    s = DataNormSparsifier([("a", torch.randn(8, 8)), ("b", torch.randn(8, 8))], sparsity_level=0.5)
    s.step()
    masks = {name: s.get_mask(name).clone() for name in ("a", "b")}
    s.data_groups["b"]["sparsity_level"] = level
    with pytest.raises(ValueError, match=r"sparsity_level in config of 'b' must be a finite number >= 0"):
        s.step()
    assert all(torch.equal(s.get_mask(name), mask) for name, mask in masks.items())


def test_sparsifier_level_rule():
    from blocksparsity._level import sparsifier_level

    assert sparsifier_level(0, "x") == (0.0, False) and sparsifier_level(0.25, "x") == (0.25, False)
    assert sparsifier_level(1, "x") == (1.0, False) and sparsifier_level(2.0, "x") == (1.0, True)
    for bad in (-1e-9, float("nan"), float("-inf"), "1", False, [0.5]):
        with pytest.raises(ValueError, match=r"sparsity_level in defaults must be a finite number >= 0"):
            sparsifier_level(bad, "defaults")


def test_attach_points_at_the_data_without_a_masked_copy():
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    s = DataNormSparsifier(sparsity_level=0.5)
    assert s.attach("w", x) is None and s.get_data("w") is x and s.get_mask("w").all()
    assert s.data_groups["w"] == {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": None}
    s.data_groups["w"]["sparsity_level"] = 0.25  # as a scheduler sets it: attach keeps the config
    s.step()
    kept = s.get_mask("w")
    s.attach("w", y)  # reuse_mask: the same mask object
    assert s.get_data("w") is y and s.get_mask("w") is kept and s.data_groups["w"]["sparsity_level"] == 0.25
    given = torch.zeros(4, 8, dtype=torch.bool)
    s.attach("w", x, mask=given)
    assert s.get_data("w") is x and torch.equal(s.get_mask("w"), given)
    s.attach("w", y, reuse_mask=False)
    assert s.get_mask("w").all()
    with pytest.raises(ValueError, match="reuse_mask"):
        s.attach("w", torch.randn(2, 8))
    with pytest.raises(ValueError, match="shape"):
        s.attach("w", x, mask=torch.ones(2, 2, dtype=torch.bool))
    assert s.get_data("w") is y and s.get_mask("w").all()  # refused calls changed nothing


def test_step_checks_all_tensors_with_one_host_sync(monkeypatch):
    """With the kernels' CPU shortcuts off (reads that would stall a GPU), step() reads the
    device once, for all tensors."""
    from blocksparsity.kernels._torch import _policy

    s = DataNormSparsifier([(f"t{i}", torch.randn(16, 16)) for i in range(12)], sparsity_level=0.5)
    calls = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(1) or real_tolist(self))
    for name in ("item", "cpu", "numpy", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"host sync via {_n}"))
    with _policy.forced(_policy.SYNC_FREE):
        s.step()
    assert len(calls) == 1


def test_no_torch_ao_import_at_run_time():
    code = (
        "import sys, torch, blocksparsity\n"
        "s = blocksparsity.DataNormSparsifier([('w', torch.randn(8, 8))]); blocksparsity.StepSLScheduler(s); s.step()\n"
        "s.squash_mask()\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch.ao.pruning')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ bad input
def test_unknown_names():
    a = torch.randn(4, 4)
    before = a.clone()
    s = DataNormSparsifier([("a", a)], sparsity_level=0.5)
    s.step()
    mask = s.get_mask("a").clone()
    for call in (lambda: s.get_data("b"), lambda: s.get_mask("b"), lambda: s.squash_mask(names=["a", "b"])):
        with pytest.raises(UnknownDataError, match="'b'"):
            call()
    with pytest.raises(KeyError):
        s.get_mask("b")
    with pytest.raises(ValueError):  # torch.ao raised ValueError; both work
        s.get_mask("b")
    # the refused squash of ["a", "b"] did nothing: "a" keeps its original values and its mask
    assert s.get_data("a", return_original=True) is a and torch.equal(a, before)
    assert torch.equal(s.get_mask("a"), mask) and not mask.all()


@pytest.mark.parametrize("data, error", [([1.0], TypeError), (nn.Linear(2, 2), TypeError), (torch.arange(4), TypeError)])
def test_unsupported_data(data, error):
    s = DataNormSparsifier()
    with pytest.raises(error, match="data"):
        s.add_data("x", data)
    assert not s.data_groups


def test_reuse_mask_needs_the_same_shape_and_changes_nothing_otherwise():
    x = torch.randn(8, 8)
    s = DataNormSparsifier([("a", x)], sparsity_level=0.5)
    s.step()
    mask = s.get_mask("a").clone()
    with pytest.raises(ValueError, match="reuse_mask"):
        s.add_data("a", torch.randn(4, 8))
    assert s.get_data("a") is x and torch.equal(s.get_mask("a"), mask)
    s.add_data("a", torch.randn(4, 8), reuse_mask=False)
    assert s.get_mask("a").shape == (4, 8)


@pytest.mark.parametrize("config, error, word", [
    (dict(sparsity_level=-0.1), ValueError, "sparsity_level"),
    (dict(sparsity_level="half"), ValueError, "sparsity_level"),
    (dict(sparsity_level=float("nan")), ValueError, "sparsity_level"),
    (dict(sparse_block_shape=(0, 4)), ValueError, "sparse_block_shape"),
    (dict(sparse_block_shape=4), TypeError, "sparse_block_shape"),
    (dict(zeros_per_block=5), ValueError, "zeros_per_block"),
    (dict(zeros_per_block=-1), ValueError, "zeros_per_block"),
    (dict(sparsity_lvl=0.5), ValueError, "sparsity_lvl"),
    (dict(mask=torch.ones(3, 3)), ValueError, "mask"),
    (dict(mask=[[1]]), TypeError, "mask"),
])
def test_bad_configs_name_the_argument_and_change_nothing(config, error, word):
    x = torch.randn(8, 8)
    s = DataNormSparsifier([("a", x)], sparsity_level=0.5)
    before = s.state_dict()
    with pytest.raises(error, match=word):
        s.add_data("a", torch.randn(8, 8), **config)
    with pytest.raises(error, match=word):
        s.add_data("new", torch.randn(8, 8), **config)
    after = s.state_dict()
    assert after["data_groups"] == before["data_groups"] and list(after["state"]) == ["a"]
    assert s.get_data("a") is x


@pytest.mark.parametrize("kwargs, error", [
    (dict(norm="L3"), ValueError), (dict(backend="gpu"), ValueError), (dict(sparsity_level=-1), ValueError),
    (dict(sparse_block_shape=(1, 0)), ValueError), (dict(zeros_per_block=9), ValueError),
])
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error):
        DataNormSparsifier(**kwargs)


def test_non_finite_data_commits_no_mask():
    good, bad = torch.randn(8, 8), torch.randn(8, 8)
    s = DataNormSparsifier([("good", good), ("bad", bad)], sparsity_level=0.5)
    s.step()
    masks = _masks(s)
    good.mul_(-1)  # would change the good mask
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="'bad'"):
        s.step()
    assert all(torch.equal(m, s.get_mask(n)) for n, m in masks.items())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="NaN"):
            s.squash_mask(names=["bad"])
    assert bad.isnan().sum() == 1


def test_a_mask_in_the_config_is_used_and_converted_to_bool():
    x = torch.randn(4, 8)
    given_mask = torch.randint(0, 2, (4, 8)).to(torch.int8)
    s = DataNormSparsifier()
    s.add_data("x", x, mask=given_mask)
    assert s.get_mask("x").dtype == torch.bool and torch.equal(s.get_mask("x"), given_mask != 0)
    assert torch.equal(s.get_data("x", return_original=False), x * (given_mask != 0))


def test_names_may_contain_dots():
    s = DataNormSparsifier([("layer.0.weight", torch.randn(8, 8)), ("layer_0_weight", torch.randn(8, 8))])
    s.step()
    assert set(s.data_groups) == {"layer.0.weight", "layer_0_weight"}


def test_attach_of_a_tensor_like_the_held_one_only_points_at_it():
    """Re-attaching data of the held one's kind (what the callbacks do at every mask update)
    keeps the mask object and config and points at the new data; a replaced tensor of another
    shape, dtype or device, another mask, or a squashed name go through the full checks."""
    p = nn.Parameter(torch.randn(8, 16))
    s = DataNormSparsifier(sparsity_level=0.5)
    s.attach("w", p.detach())
    s.step()
    mask, config = s.get_mask("w"), s.data_groups["w"]
    again = p.detach()
    s.attach("w", again)
    assert s.get_data("w") is again and s.get_mask("w") is mask and s.data_groups["w"] is config
    with torch.no_grad():
        p.mul_(-3.0).add_(torch.randn(8, 16))  # new values in the same memory: the next step reads them
    s.step()
    assert torch.equal(s.get_mask("w"), naive_mask(p.detach()))
    p.data = torch.randn(8, 16, dtype=torch.float16)  # replaced (e.g. the strategy cast it): stored anew
    s.attach("w", p.detach())
    assert s.get_data("w").dtype == torch.float16 and s.get_mask("w") is mask
    with pytest.raises(ValueError, match="reuse_mask"):
        s.attach("w", torch.randn(4, 16, dtype=torch.float16))  # another shape is still refused
    other = torch.zeros(8, 16, dtype=torch.bool)
    s.attach("w", p.detach(), mask=other)
    assert torch.equal(s.get_mask("w"), other)
    s.squash_mask()
    assert torch.equal(p.detach(), torch.zeros(8, 16, dtype=torch.float16))
    s.attach("w", p.detach())
    assert "w" not in s._squashed and s.get_data("w", return_original=True) is not None


def naive_mask(x: torch.Tensor) -> torch.Tensor:
    return naive.block_mask(x, 0.5, (1, 4))


def test_nan_fails_step_and_commits_nothing_after_cached_steps():
    """With every remembered configuration and the re-attach shortcut warm, a NaN in one tensor
    still fails ``step()`` naming it, and no tensor's mask changes."""
    xs = {f"t{i}": torch.randn(16, 16) for i in range(3)}
    s = DataNormSparsifier(sparsity_level=0.5, zeros_per_block=2)
    for _ in range(3):
        for name, x in xs.items():
            s.attach(name, x)
        s.step()
    before = {name: s.get_mask(name).clone() for name in xs}
    with torch.no_grad():
        for x in xs.values():
            x.copy_(torch.randn(16, 16))  # new masks would differ
        xs["t1"][3, 5] = float("nan")
    for name, x in xs.items():
        s.attach(name, x)
    with pytest.raises(ValueError, match="'t1'"):
        s.step()
    assert all(torch.equal(s.get_mask(name), before[name]) for name in xs)
