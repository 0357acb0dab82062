"""Which tensors a callback sparsifies, and copies of a module made on another device."""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Callable, Iterable

import torch
from torch import nn

ParamFilter = None | str | re.Pattern | Iterable[str] | Callable[[str, torch.Tensor], bool]


def target_module(pl_module: nn.Module) -> nn.Module:
    """The module to sparsify: ``pl_module.model`` when it is a module, else ``pl_module``."""
    model = getattr(pl_module, "model", None)
    return model if isinstance(model, nn.Module) else pl_module


def check_param_filter(param_filter: ParamFilter) -> Callable[[str, torch.Tensor], bool]:
    """Turn ``param_filter`` into a predicate on (name, parameter).

    ``None``: every floating-point parameter (as torch.ao's callbacks, which take every
    parameter). A ``str``: a glob on the dotted name (``"*.weight"``). A compiled regex:
    searched in the name. A list of those: any of them. A callable: ``f(name, param) -> bool``.
    """
    if param_filter is None:
        return lambda name, p: True
    if isinstance(param_filter, str):
        return lambda name, p: fnmatch.fnmatchcase(name, param_filter)
    if isinstance(param_filter, re.Pattern):
        return lambda name, p: param_filter.search(name) is not None
    if callable(param_filter):
        return param_filter
    if isinstance(param_filter, Iterable):
        parts = [check_param_filter(f) for f in param_filter]
        return lambda name, p: any(f(name, p) for f in parts)
    raise TypeError(
        "param_filter must be None, a glob str, a compiled regex, a list of those, or a callable (name, param) -> bool; "
        f"got {type(param_filter).__name__}"
    )


def selected_parameters(module: nn.Module, keep: Callable[[str, torch.Tensor], bool]) -> dict[str, nn.Parameter]:
    """The floating-point parameters of ``module`` that ``keep`` accepts, by dotted name."""
    return {
        name: p for name, p in module.named_parameters()
        if p.dtype.is_floating_point and p.numel() > 0 and keep(name, p)
    }


def copy_to(module: nn.Module, device: torch.device | str | None, skip: Iterable[object] = ()) -> nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are made directly on
    ``device`` (default: where they are), so a GPU model copied to the CPU never exists
    twice on the GPU. Objects in ``skip`` (a trainer, say) become ``None`` in the copy."""
    memo: dict[int, object] = {id(obj): None for obj in skip}
    for t in (*module.parameters(), *module.buffers()):
        if id(t) in memo:
            continue
        new = t.detach().to(device if device is not None else t.device, copy=True)
        memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
    return copy.deepcopy(module, memo)
