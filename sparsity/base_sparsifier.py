"""BaseDataSparsifier: named tensors, their masks and configs, with torch.ao's contract.

A data sparsifier holds named tensors (``torch.Tensor``, ``nn.Parameter``, or the weight
of an ``nn.Embedding``/``nn.EmbeddingBag``), one bool mask per tensor and one config
dict per tensor. ``step()`` recomputes the masks; ``get_data(name, return_original=False)``
gives the masked data; ``squash_mask()`` writes the masks into the tensors themselves (in
place, so a model holding those tensors becomes sparse) and stops tracking the originals.

Differences from ``torch.ao.pruning._experimental.data_sparsifier.BaseDataSparsifier``:
masks are ``torch.bool`` (a quarter of an fp32 mask) with the data's shape; no
parametrization is attached (masks apply on demand, and in place at squash); names may
contain dots; bad input raises ``TypeError``/``ValueError``/``KeyError`` naming the
argument and changes nothing.

Sharded data (``DTensor``: FSDP2 parameters, ``distribute_tensor``) gets DTensor masks
placed like it; masks, masked data, ``squash_mask`` and ``state_dict`` stay sharded.
"""

from __future__ import annotations

import abc
import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from blocksparsity import kernels
from blocksparsity.kernels import validation

__all__ = ["SUPPORTED_TYPES", "BaseDataSparsifier", "UnknownDataError"]

EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)
SUPPORTED_TYPES = (torch.Tensor, nn.Parameter, *EMBEDDING_TYPES)
STATE_DICT_VERSION = 1


class UnknownDataError(KeyError, ValueError):
    """No data of that name (a KeyError, and a ValueError as torch.ao raises)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _weight(data: object) -> torch.Tensor:
    if isinstance(data, EMBEDDING_TYPES):
        return data.weight
    if isinstance(data, torch.Tensor):
        return data
    raise TypeError(
        f"data must be a torch.Tensor, nn.Parameter, nn.Embedding or nn.EmbeddingBag; got {type(data).__name__}"
    )


def _as_bool_mask(mask: object, data: torch.Tensor, name: str) -> torch.Tensor:
    """``mask`` as a bool tensor on ``data``'s device; for DTensor data, a DTensor placed like it."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask for {name!r} must be a torch.Tensor; got {type(mask).__name__}")
    if mask.shape != data.shape:
        raise ValueError(f"mask for {name!r} must have the data's shape {tuple(data.shape)}; got {tuple(mask.shape)}")
    mask = mask if mask.dtype == torch.bool else mask != 0
    if validation.is_dtensor(data):
        return _placed_like(mask, data, name)
    if validation.is_dtensor(mask):
        raise ValueError(f"mask for {name!r} is a DTensor but its data is not; pass a plain mask")
    return mask.to(data.device)


def _placed_like(mask: torch.Tensor, data: Any, name: str) -> torch.Tensor:
    """A bool mask as a DTensor on ``data``'s mesh with its placements. A plain mask holds the
    whole tensor on every rank: each keeps its own part (no communication)."""
    from torch.distributed.tensor import distribute_tensor

    if not validation.is_dtensor(mask):
        return distribute_tensor(mask.to(data.device), data.device_mesh, data.placements, src_data_rank=None)
    if mask.device_mesh != data.device_mesh:
        raise ValueError(f"mask for {name!r} is a DTensor on another device mesh than its data")
    if tuple(mask.placements) != tuple(data.placements):
        return mask.redistribute(data.device_mesh, data.placements)
    return mask


def _placed_alike(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Are ``a`` and ``b`` DTensors of one shape on one mesh with the same placements?"""
    return (
        validation.is_dtensor(a) and validation.is_dtensor(b) and a.shape == b.shape
        and a.device_mesh == b.device_mesh and tuple(a.placements) == tuple(b.placements)
    )


def _all_kept(weight: torch.Tensor) -> torch.Tensor:
    """An all-True mask for ``weight`` (a DTensor placed like it, for DTensor data)."""
    if validation.is_dtensor(weight):
        return torch.ones_like(weight, dtype=torch.bool)
    return torch.ones(weight.shape, dtype=torch.bool, device=weight.device)


def _need_mapping(value: object, what: str) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict; got {type(value).__name__}")


def _names(names: object) -> list[str]:
    """``names`` of ``squash_mask``: an iterable of names (a lone str is a mistake, not letters)."""
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise TypeError(f"names must be a list of data names (e.g. [{names!r}]) or None; got {names!r}")
    names = list(names)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"names must hold strs; got {name!r}")
    return names


class BaseDataSparsifier(abc.ABC):
    """Base class of data sparsifiers: subclasses implement ``update_mask``.

    Args:
        data_list: ``(name, data)`` pairs to add with the default config.
        **defaults: the default config of every data added later; ``add_data(**config)``
            overrides it per tensor.
    """

    def __init__(self, data_list: Iterable[tuple[str, Any]] | None = None, **defaults: Any):
        self.defaults: dict[str, Any] = self._checked_config(dict(defaults), "defaults")
        self.state: dict[str, dict[str, Any]] = defaultdict(dict)
        self.data_groups: dict[str, dict[str, Any]] = {}
        self.enable_mask_update = True
        self._data: dict[str, torch.Tensor] = {}
        self._squashed: set[str] = set()
        for name, data in data_list or ():
            self.add_data(name, data)

    # ---------------------------------------------------------------- config
    def _checked_config(self, config: dict[str, Any], where: str) -> dict[str, Any]:
        """Check a config dict before it is stored. Subclasses check their own keys."""
        return config

    # ---------------------------------------------------------------- data
    def add_data(self, name: str, data: Any, reuse_mask: bool = True, **config: Any) -> torch.Tensor:
        """Add (or replace) data under ``name``; returns the masked data.

        Replacing keeps the old config unless overridden here, and with ``reuse_mask``
        the old mask, which then requires the same shape. ``config`` may carry an
        initial ``mask`` (the data's shape; bool, or numbers where nonzero keeps).
        """
        self._store(name, data, reuse_mask, config)
        return self.get_data(name, return_original=False)

    def attach(self, name: str, data: Any, *, mask: torch.Tensor | None = None, reuse_mask: bool = True) -> None:
        """Point ``name`` at ``data`` (no copy), as ``add_data`` does, but return nothing:
        no masked copy is computed. What the Lightning callbacks call to follow the live
        weights at every mask update, and to hand the sparsifier a model's copy at the end.

        The config of ``name`` is kept (or the defaults for a new name). The mask is
        ``mask`` when given (the data's shape; bool, or numbers where nonzero keeps), else
        with ``reuse_mask`` the current one (then ``data`` needs the old data's shape), else
        all kept. Bad input raises and changes nothing.
        """
        if self._same_kind(name, data, mask, reuse_mask):  # the mask and config stay: only the data changes
            self._data[name] = data
            return
        self._store(name, data, reuse_mask, {} if mask is None else {"mask": mask})

    def _same_kind(self, name: object, data: object, mask: torch.Tensor | None, reuse_mask: bool) -> bool:
        """Would ``attach(name, data, mask=mask, reuse_mask=reuse_mask)`` change nothing but the
        data ``name`` points at? Yes when ``name`` (not squashed) holds a plain tensor of
        ``data``'s type, shape, strides, dtype, device and ``requires_grad`` (so ``data`` passes
        every check it passed) and keeps its mask: ``mask`` is the very mask held, or None with
        ``reuse_mask``. The config is kept either way. Anything else (a parameter moved to
        another device or dtype, a DTensor, another mask) goes through ``_store`` and its
        checks. What the callbacks' re-attaching at every mask update costs."""
        held = self._data.get(name) if isinstance(name, str) else None
        if held is None or name in self._squashed or type(data) is not type(held):
            return False
        if mask is None:
            if not reuse_mask:
                return False
        elif mask is not self.state[name].get("mask"):
            return False
        return (
            not validation.is_dtensor(data)
            and data.shape == held.shape
            and data.stride() == held.stride()
            and data.dtype == held.dtype
            and data.device == held.device
            and data.layout == held.layout
            and data.requires_grad == held.requires_grad
            and data.is_meta == held.is_meta
        )

    def _store(self, name: str, data: Any, reuse_mask: bool, config: dict[str, Any]) -> None:
        """``add_data`` without computing the masked copy."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str; got {name!r}")
        weight = _weight(data)
        self._check_data(name, weight)
        replacing = name in self.data_groups
        base = self.data_groups[name] if replacing else self.defaults
        initial_mask = config.pop("mask", None)
        local = self._checked_config({**copy.deepcopy(base), **config}, f"config of {name!r}")
        if initial_mask is not None:
            mask = _as_bool_mask(initial_mask, weight, name)
        elif replacing and reuse_mask:
            old = self._data[name]
            if old.shape != weight.shape:
                raise ValueError(
                    f"reuse_mask=True keeps the mask of {name!r}, so the new data needs its shape "
                    f"{tuple(old.shape)}; got {tuple(weight.shape)} (pass reuse_mask=False)"
                )
            mask = self.state[name]["mask"]
        else:
            mask = _all_kept(weight)
        self._data[name] = weight
        self._squashed.discard(name)
        self.state[name]["mask"] = mask
        self.data_groups[name] = local

    def _check_data(self, name: str, weight: torch.Tensor) -> None:
        """Data must be a dense floating-point tensor with data, of at least one dim: what
        masks are computed for. Subclasses narrow the dtypes they score."""
        if weight.layout != torch.strided:
            raise TypeError(f"data {name!r} must be a dense (strided) tensor; got layout {weight.layout}")
        if weight.is_meta:
            raise ValueError(f"data {name!r} is a meta tensor: it has no values to compute a mask from")
        if not weight.dtype.is_floating_point:
            raise TypeError(f"data {name!r} must be floating point; got {weight.dtype}")
        if weight.dim() < 1:
            raise ValueError(f"data {name!r} must have at least 1 dimension; got a 0-dim tensor")

    def _check_name(self, name: str) -> None:
        if name not in self.data_groups:
            known = ", ".join(map(repr, list(self.data_groups)[:8])) or "none"
            raise UnknownDataError(f"no data named {name!r} in this sparsifier (known: {known})")

    def get_data(self, name: str, return_original: bool = True) -> torch.Tensor:
        """The data added under ``name``: as added (``return_original``), or masked."""
        self._check_name(name)
        data = self._data[name]
        if name in self._squashed:
            if return_original:
                raise ValueError(f"the mask of {name!r} was squashed: its original values no longer exist")
            return data
        if return_original:
            return data
        with torch.no_grad():
            return data * self.state[name]["mask"]

    def get_mask(self, name: str) -> torch.Tensor:
        """The bool mask of ``name`` (True = keep), the data's shape."""
        self._check_name(name)
        return self.state[name]["mask"]

    # ---------------------------------------------------------------- masks
    @abc.abstractmethod
    def update_mask(self, name: str, data: torch.Tensor, **config: Any) -> None:
        """Compute and store a new mask for ``name`` (write it with ``_commit_mask``)."""

    def _commit_mask(self, name: str, mask: torch.Tensor) -> None:
        """Store ``mask`` as the mask of ``name`` without copying and without changing
        the identity of the mask tensor that ``get_mask`` handed out (a DTensor mask is
        overwritten shard by shard: ``.data`` does not reach a DTensor's shard)."""
        current = self.state[name]["mask"]
        if not (validation.is_dtensor(current) or validation.is_dtensor(mask)):
            current.data = mask
        elif _placed_alike(current, mask):
            current.to_local().copy_(mask.to_local())
        else:
            self.state[name]["mask"] = mask

    def step(self) -> None:
        """Recompute every mask from the current (original) data."""
        if not self.enable_mask_update:
            return
        with torch.no_grad():
            for name, config in self.data_groups.items():
                self.update_mask(name, self.get_data(name), **config)

    def squash_mask(self, *args: Any, leave_parametrized: bool = True, names: Iterable[str] | None = None, **kwargs: Any) -> None:
        """Stop tracking originals. With ``leave_parametrized`` the masks are first written
        into the data in place, so modules holding those tensors become sparse."""
        names = list(self.data_groups) if names is None else _names(names)
        for name in names:
            self._check_name(name)
        todo = [name for name in dict.fromkeys(names) if name not in self._squashed]
        if leave_parametrized:
            # Check everything before writing anything: one bad tensor leaves all untouched.
            for name in todo:
                validation.check_writable(self._data[name], f"data {name!r}")
            if todo:
                with torch.no_grad():
                    flags = [kernels.nonfinite(self._data[name]) for name in todo]
                    flags = torch.stack([flag.to(flags[0].device) for flag in flags])
                bad = [name for name, flag in zip(todo, flags.tolist(), strict=True) if flag]  # the one sync
                if bad:
                    raise ValueError(f"data {bad} hold NaN or infinite values; no mask was squashed")
        with torch.no_grad():
            for name in todo:
                if leave_parametrized:
                    kernels.apply_mask(self._data[name], self.state[name]["mask"], inplace=True, backend=self._backend())
                self._squashed.add(name)

    def _backend(self) -> str:
        return getattr(self, "backend", "auto")

    # ---------------------------------------------------------------- state
    def state_dict(self, with_data: bool = True) -> dict[str, Any]:
        """``state`` (name -> {"mask"}), ``data_groups`` (configs) and, ``with_data``, the
        data itself under ``_container`` (what torch.ao saves). Masks stay bool."""
        out: dict[str, Any] = {
            "version": STATE_DICT_VERSION,
            "state": {name: {"mask": s["mask"].clone()} for name, s in self.state.items()},
            "data_groups": copy.deepcopy(self.data_groups),
            "squashed": sorted(self._squashed),
        }
        if with_data:
            out["_container"] = {name: t.detach().clone() for name, t in self._data.items()}
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore masks, configs and (when present) data. ``strict`` replaces everything;
        otherwise entries already here win over loaded ones of the same name. A
        ``state_dict`` without data (``state_dict(with_data=False)``) keeps the data here.

        Accepts torch.ao's format too (sparse COO masks, container keys)."""
        states, groups, container, squashed = self._parse_state_dict(state_dict)
        data = dict(self._data)
        for name in states:
            if name in container:
                data[name] = container[name]
            elif name not in data:
                raise ValueError(f"state_dict has a mask for {name!r} but no data, and no data of that name is here")
            if states[name].shape != data[name].shape:
                raise ValueError(
                    f"state_dict's mask for {name!r} has shape {tuple(states[name].shape)}, "
                    f"its data {tuple(data[name].shape)}"
                )
        if strict:
            self._data, self.state, self.data_groups, self._squashed = {}, defaultdict(dict), {}, set()
        for name, mask in states.items():
            if strict or name not in self.data_groups:
                self._data[name] = data[name]
                self.state[name]["mask"] = _as_bool_mask(mask, data[name], name)
                self.data_groups[name] = groups[name]
                if name in squashed:
                    self._squashed.add(name)

    def _parse_state_dict(self, sd: Mapping[str, Any]):
        """Check every part of a state dict (as ``add_data`` checks data) before anything changes."""
        if not isinstance(sd, Mapping) or "state" not in sd or "data_groups" not in sd:
            raise ValueError("state_dict must be a mapping with 'state' and 'data_groups' (from state_dict())")
        _need_mapping(sd["data_groups"], "state_dict['data_groups']")
        _need_mapping(sd["state"], "state_dict['state']")
        groups = {}
        for name, cfg in sd["data_groups"].items():
            _need_mapping(cfg, f"state_dict['data_groups'][{name!r}]")
            groups[name] = self._checked_config(dict(cfg), f"config of {name!r}")
        states = {}
        for name, s in sd["state"].items():
            if name not in groups:
                raise ValueError(f"state_dict has a mask for {name!r} but no config in 'data_groups'")
            where = f"state_dict['state'][{name!r}]['mask']"
            if not isinstance(s, Mapping) or "mask" not in s:
                raise TypeError(f"state_dict['state'][{name!r}] must be a dict with a 'mask'; got {type(s).__name__}")
            mask = s["mask"]
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"{where} must be a torch.Tensor; got {type(mask).__name__}")
            if mask.is_meta or mask.dtype.is_complex:
                raise TypeError(f"{where} must be a bool (or numeric) tensor with data; got {mask.dtype} on {mask.device}")
            mask = mask.to_dense() if not validation.is_dtensor(mask) and mask.layout != torch.strided else mask
            states[name] = mask if mask.dtype == torch.bool else mask != 0
        container = {}
        _need_mapping(sd.get("_container", {}), "state_dict['_container']")
        for key, value in sd.get("_container", {}).items():
            # torch.ao keeps parametrized data as "parametrizations.<name>.original"
            if not isinstance(key, str) or not key:
                raise TypeError(f"state_dict['_container'] keys must be non-empty strs; got {key!r}")
            name = key[len("parametrizations."): -len(".original")] if key.startswith("parametrizations.") else key
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"state_dict['_container'][{key!r}] must be a torch.Tensor; got {type(value).__name__}")
            self._check_data(name, value)
            container[name] = value
        squashed = sd.get("squashed", ())
        if isinstance(squashed, str) or not isinstance(squashed, Iterable) or not all(isinstance(n, str) for n in squashed):
            raise TypeError(f"state_dict['squashed'] must be a list of names; got {squashed!r}")
        squashed = set(squashed)
        if "version" not in sd:  # torch.ao: data without a parametrization was squashed
            squashed = {k for k in sd.get("_container", {}) if not k.startswith("parametrizations.")}
        return states, groups, container, squashed

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "step"}  # a scheduler's step counter wrapper
        state["state"] = dict(self.state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["state"] = defaultdict(dict, state["state"])
        self.__dict__.update(state)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for name, config in self.data_groups.items():
            lines += ["\tData Group", f"\t    name: {name}"]
            lines += [f"\t    {key}: {config[key]}" for key in sorted(config) if key != "data"]
        return "\n".join(lines) + "\n)"

