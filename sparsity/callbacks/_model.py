"""Which tensors a callback sparsifies, and copies of a module made on another device
(or, for a model sharded by FSDP2, on the same mesh, still sharded)."""

from __future__ import annotations

import copy
import fnmatch
import re
import sys
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from blocksparsity.kernels.validation import is_dtensor

# Callable comes before str: jsonargparse (LightningCLI) then reads an import path such as
# "my_package.filters.only_attention" as that function, and anything else as a glob.
ParamFilter = None | Callable[[str, torch.Tensor], bool] | str | re.Pattern | Iterable[str | re.Pattern]

COMPILED_WRAPPER = "_orig_mod"  # torch.compile's OptimizedModule holds the user's module under this name


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The user's module inside ``torch.compile``'s wrapper(s); ``module`` itself otherwise."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing was compiled
    while eval_frame is not None and isinstance(module, eval_frame.OptimizedModule) \
            and isinstance(getattr(module, COMPILED_WRAPPER, None), nn.Module):
        module = getattr(module, COMPILED_WRAPPER)
    return module


def without_compile_wrappers(module: nn.Module) -> nn.Module:
    """``module`` with every ``torch.compile`` wrapper among its submodules replaced by the
    module it wraps, in place (for a copy: its names and ``state_dict`` keys are then the
    user's); the root unwrapped too."""
    module = unwrap_compiled(module)
    for parent in module.modules():
        for name, child in parent._modules.items():
            if child is not None and unwrap_compiled(child) is not child:
                parent._modules[name] = unwrap_compiled(child)
    return module


def user_name(name: str) -> str:
    """A parameter's name as the user wrote the model: ``torch.compile``'s ``_orig_mod.``
    segments (from compiled submodules) left out."""
    return ".".join(part for part in name.split(".") if part != COMPILED_WRAPPER)


def named_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """``module``'s parameters by the user's dotted names (see ``user_name``), each once:
    a parameter tied to another (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``)
    appears under its first name only, as ``nn.Module.named_parameters`` does."""
    return {user_name(name): p for name, p in module.named_parameters()}


def parameter_aliases(module: nn.Module) -> dict[int, list[str]]:
    """Every user name of each parameter (tied parameters have several), by ``id``."""
    aliases: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(user_name(name))
    return aliases


def target_module(pl_module: nn.Module) -> nn.Module:
    """The module to sparsify: ``pl_module.model`` when it is a module, else ``pl_module``;
    the user's module when it is wrapped by ``torch.compile``."""
    model = getattr(pl_module, "model", None)
    return unwrap_compiled(model if isinstance(model, nn.Module) else pl_module)


def weight_matrices(name: str, param: torch.Tensor) -> bool:
    """The default ``param_filter``: parameters of two or more dimensions (weight matrices,
    conv kernels, embedding tables), not biases or norm scales (LayerNorm, BatchNorm), which
    are small and which pruning hurts most. Compose it in your own filter, e.g.
    ``lambda n, p: weight_matrices(n, p) and "wpe" not in n``."""
    return param.dim() >= 2


def check_param_filter(param_filter: ParamFilter) -> Callable[[str, torch.Tensor], bool]:
    """Turn ``param_filter`` into a predicate on (name, parameter).

    ``None`` (default): ``weight_matrices``, the parameters of two or more dimensions.
    ``"*"``: every floating-point parameter (torch.ao's callbacks take every parameter).
    A ``str``: a glob on the dotted name (``"*.weight"``). A compiled regex: searched in
    the name. A list of those: any of them. A callable: ``f(name, param) -> bool`` (from
    LightningCLI: its import path, ``my_package.filters.only_attention``).
    """
    if param_filter is None:
        return weight_matrices
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
    """The floating-point parameters of ``module`` that ``keep`` accepts, by the user's
    dotted name. A tied parameter is taken once, under its first name, when ``keep``
    accepts any of its names."""
    aliases = parameter_aliases(module)
    for name, p in named_parameters(module).items():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"parameter {name!r} is not initialized yet (a lazy module such as nn.LazyLinear), so it has no shape "
                "to compute masks for: materialize it before fit, e.g. with one forward pass on a sample batch in "
                "the LightningModule's __init__"
            )
    return {
        name: p for name, p in named_parameters(module).items()
        if p.dtype.is_floating_point and p.numel() > 0 and any(keep(alias, p) for alias in aliases[id(p)])
    }


def refuse_flat_parameters(module: nn.Module) -> None:
    """FSDP1 (``FullyShardedDataParallel``, Lightning's ``FSDPStrategy``) holds each rank's
    slice of a flat buffer; its per-parameter views (``use_orig_params=True``) are 1-D runs of
    elements that cut rows and blocks anywhere, so exact block masks cannot be found on them."""
    if not torch.distributed.is_available():
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in module.modules()):
        raise ValueError(FSDP1_MESSAGE)


FSDP1_MESSAGE = (
    "the model is wrapped in FSDP1 (FullyShardedDataParallel, Lightning's FSDPStrategy), whose parameters are 1-D "
    "slices of flat buffers that cut rows and blocks anywhere, so exact block masks cannot be computed on them. "
    "Use FSDP2 instead: Lightning's ModelParallelStrategy with torch.distributed.fsdp.fully_shard in "
    "configure_model(), whose parameters are DTensors that these callbacks sparsify shard by shard"
)


def _fsdp2_module_type() -> type | None:
    if not torch.distributed.is_available():
        return None
    from torch.distributed.fsdp import FSDPModule

    return FSDPModule


def _copied_tensor(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    if is_dtensor(t):  # a shard stays a shard, on its mesh
        if device is not None and torch.device(device).type != t.device.type:
            raise ValueError(
                f"sparsified_device={str(device)!r} cannot hold a copy of a sharded (DTensor) parameter on "
                f"{t.device.type}: its shards stay on their mesh; leave sparsified_device=None"
            )
        return t.detach().clone()
    return t.detach().to(device if device is not None else t.device, copy=True)


def copy_to(module: nn.Module, device: torch.device | str | None, skip: Iterable[object] = (),
            values: Mapping[int, torch.Tensor] | None = None) -> nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are made directly on
    ``device`` (default: where they are), so a GPU model copied to the CPU never exists
    twice on the GPU. Objects in ``skip`` (a trainer, say) become ``None`` in the copy.
    ``values`` (by ``id`` of a parameter or buffer of ``module``): tensors, already copied,
    that the copy takes as they are instead of copying the module's (a snapshot).

    DTensor (sharded) parameters are copied shard by shard on their mesh. A module
    sharded by FSDP2 (``fully_shard``), which cannot be deep-copied, is copied as the
    module tree of its original classes without FSDP's hooks: its parameters are the
    copied DTensors (its ``state_dict()`` is sharded; it does not run ``forward`` on
    plain tensors)."""
    memo: dict[int, object] = {id(obj): None for obj in skip}
    for t in (*module.parameters(), *module.buffers()):
        if id(t) in memo:
            continue
        new = values[id(t)] if values is not None and id(t) in values else _copied_tensor(t, device)
        memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
        if is_dtensor(t):
            memo[id(t.device_mesh)] = t.device_mesh  # meshes and their process groups are shared, not copied
    fsdp2 = _fsdp2_module_type()
    if fsdp2 is not None and any(isinstance(m, fsdp2) for m in module.modules()):
        return _copy_without_fsdp(module, memo, fsdp2)
    return copy.deepcopy(module, memo)


_FSDP_ATTRIBUTES = ("_is_fsdp_managed_module", "_fsdp_use_orig_params")


def _is_fsdp_hook(hook: object) -> bool:
    hook = getattr(hook, "hook", hook)  # torch's _WrappedHook
    function = getattr(hook, "__func__", hook)
    return (getattr(function, "__module__", None) or "").startswith("torch.distributed.fsdp")


def _copy_without_fsdp(module: nn.Module, memo: dict[int, object], fsdp2: type) -> nn.Module:
    """Deep copy of ``module`` as instances of the classes it had before ``fully_shard``,
    without FSDP's state, attributes and hooks."""
    if id(module) in memo:
        return memo[id(module)]  # type: ignore[return-value]
    cls = next(c for c in type(module).__mro__ if not issubclass(c, fsdp2))
    new = cls.__new__(cls)
    memo[id(module)] = new
    hooks = {key: d for key, d in module.__dict__.items() if "hooks" in key and isinstance(d, dict)}
    fsdp_hook_ids = {hook_id for d in hooks.values() for hook_id, hook in d.items() if _is_fsdp_hook(hook)}
    for key, value in module.__dict__.items():
        if key.startswith("__composable_api") or key in _FSDP_ATTRIBUTES:
            continue
        if key == "_modules":
            value = {name: None if child is None else _copy_without_fsdp(child, memo, fsdp2) for name, child in value.items()}
        elif key in hooks:
            value = copy.deepcopy(type(value)((i, h) for i, h in value.items() if i not in fsdp_hook_ids), memo)
        else:
            value = copy.deepcopy(value, memo)
        new.__dict__[key] = value
    return new
