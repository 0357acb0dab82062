"""Calibration statistics: the second moments of the inputs of the layers whose weights are pruned.

For each pruned weight read by a layer with a matrix product, forward pre-hooks sum
``H = sum x x^T`` over the layer's input vectors ``x`` (or only ``diag H = sum x*x`` when no
weight update is asked for), in float32 (or float64) on the weight's device, with no host
sync per batch (``addmm_`` into a preallocated buffer; counts come from shapes). Which input
vectors, by layer:

- ``nn.Linear`` (weight ``(out, in)``): the last dimension of the input; ``H`` is over the
  weight's columns, the scale per column ``(1, in)``.
- Hugging Face ``Conv1D`` (GPT-2; weight ``(in, out)``): the same vectors; ``H`` is over the
  weight's rows, the scale per row ``(in, 1)``.
- ``nn.Conv1d/2d/3d`` (``groups=1``): the unfolded input patches (padding, stride and
  dilation as the layer applies them), one vector of ``in * k1 * k2 ...`` per output
  position, ordered as the weight's 2-D view ``(out, in * k...)``; the scale per column.

Embedding tables (and a conv with ``groups > 1``, or any other reader) get no statistics:
they keep magnitude scores and no update. A weight read by several layers (tied weights) has
one ``H``, summed over all the layers that read it as above; when one of its readers is an
embedding (GPT-2's ``wte``/``lm_head``) it gets the scale from its Linear readers, and no
update (the update would change the embedding's rows for the output layer's sake).

Memory: one ``n x n`` buffer (``n = in`` or ``in * k...``) per weight (``n`` values with
``full=False``), in the chosen dtype: ``InputStatistics.bytes`` states it, and
``plan_groups`` splits the weights into groups whose buffers fit a budget (a weight whose
buffer alone exceeds it is a group of its own). A conv layer's hook also holds its unfolded
batch (``k1 * k2 ...`` times the input) while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from blocksparsity.export import is_transposed_linear

__all__ = ["InputStatistics", "Target", "find_targets", "plan_groups"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


@dataclass
class Target:
    """A pruned weight and the layers that read it.

    ``axis`` is ``"column"`` (``H`` over the columns of the weight's 2-D view: Linear, conv) or
    ``"row"`` (over its rows: ``Conv1D``); ``readers`` are the layers whose inputs are summed;
    ``updatable`` is False when an embedding also reads the weight (tied) or a reader is not
    supported; ``why`` says why not."""

    name: str
    weight: torch.Tensor
    axis: str
    features: int
    readers: list[nn.Module] = field(default_factory=list)
    updatable: bool = True
    why: str = ""

    def view_2d(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (the weight's shape) as ``(rows, features)``: the orientation ``H`` is over."""
        t2 = t.reshape(t.shape[0], -1)
        return t2.t() if self.axis == "row" else t2


def _kind(module: nn.Module, weight: torch.Tensor) -> tuple[str, int] | None:
    """(axis, features) for a supported reader of ``weight``, else None."""
    if isinstance(module, nn.Linear):
        return "column", weight.shape[1]
    if is_transposed_linear(module):
        return "row", weight.shape[0]
    if isinstance(module, _CONVS) and module.groups == 1 and weight.dim() >= 3:
        return "column", weight[0].numel()
    return None


def find_targets(module: nn.Module, params: Mapping[str, torch.Tensor]) -> dict[str, Target]:
    """The weights of ``params`` (name -> parameter of ``module``) that a supported layer
    reads, with their readers. Weights no such layer reads are left out: they keep magnitude
    scores."""
    by_id = {id(p): name for name, p in params.items()}
    readers: dict[str, list[nn.Module]] = {}
    for m in module.modules():
        w = m._parameters.get("weight") if hasattr(m, "_parameters") else None
        if w is not None and id(w) in by_id:
            readers.setdefault(by_id[id(w)], []).append(m)
    targets = {}
    for name, mods in readers.items():
        weight = params[name]
        kinds = [(m, _kind(m, weight)) for m in mods]
        supported = [(m, k) for m, k in kinds if k is not None]
        if not supported or len({k for _, k in supported}) > 1:
            continue
        axis, features = supported[0][1]
        target = Target(name, weight, axis, features, [m for m, _ in supported])
        others = [m for m, k in kinds if k is None]
        if others:
            target.updatable = False
            target.why = (f"also read by {type(others[0]).__name__}"
                          + (" (a tied embedding)" if isinstance(others[0], _EMBEDDINGS) else ""))
        targets[name] = target
    return targets


def plan_groups(targets: Mapping[str, Target], *, full: bool, itemsize: int, max_bytes: int | None) -> list[list[str]]:
    """The targets in groups (in order) whose buffers together fit ``max_bytes`` (None: one
    group); a target whose buffer alone exceeds it is a group of its own."""
    groups: list[list[str]] = []
    used = 0
    for name, t in targets.items():
        size = (t.features ** 2 if full else t.features) * itemsize
        if groups and (max_bytes is None or used + size <= max_bytes):
            groups[-1].append(name)
            used += size
        else:
            groups.append([name])
            used = size
    return groups


def _patches(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input patches a conv layer multiplies by its weight: ``(positions, in * k...)``."""
    dims = x.dim() - 2
    pad = conv._reversed_padding_repeated_twice
    if any(pad):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, pad, mode=mode)
    for d in range(dims):
        k, s, dil = conv.kernel_size[d], conv.stride[d], conv.dilation[d]
        x = x.unfold(2 + d, dil * (k - 1) + 1, s)  # adds the window as the last dim
        if dil > 1:
            x = x[..., ::dil]
    # (B, C, o1.., k1..) -> (B, o1.., C, k1..) -> (positions, C * k1 * ...)
    c = x.shape[1]
    order = [0, *range(2, 2 + dims), 1, *range(2 + dims, 2 + 2 * dims)]
    return x.permute(order).reshape(-1, c * int(torch.tensor(conv.kernel_size).prod()))


class InputStatistics:
    """Sums of the input second moments of ``targets``' readers while ``collecting()``.

    Args:
        targets: from ``find_targets``.
        full: keep ``H`` (``n x n``, for the weight update); else only ``diag H`` (for scores).
        dtype: ``torch.float32`` or ``torch.float64``.
    """

    def __init__(self, targets: Mapping[str, Target], *, full: bool, dtype: torch.dtype = torch.float32):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
        self.targets = dict(targets)
        self.full = full
        self.dtype = dtype
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}  # input vectors summed, from shapes (no sync)

    def bytes(self, names: list[str] | None = None) -> int:
        """The buffers' size for ``names`` (default: all targets)."""
        item = torch.finfo(self.dtype).bits // 8
        names = list(self.targets) if names is None else names
        return sum((self.targets[n].features ** 2 if self.full else self.targets[n].features) * item for n in names)

    def reset(self, names: list[str]) -> None:
        for name in names:
            t = self.targets[name]
            shape = (t.features, t.features) if self.full else (t.features,)
            self.sums[name] = torch.zeros(shape, dtype=self.dtype, device=t.weight.device)
            self.counts[name] = 0

    def _add(self, name: str, module: nn.Module, x: torch.Tensor) -> None:
        t = self.targets[name]
        x = x.detach()
        if isinstance(module, _CONVS):
            if x.dim() == module.weight.dim() - 1:  # unbatched input
                x = x.unsqueeze(0)
            x = _patches(module, x)
        else:
            x = x.reshape(-1, t.features)
        x = x.to(self.dtype)
        if self.full:
            self.sums[name].addmm_(x.t(), x)
        else:
            self.sums[name].add_((x * x).sum(0))
        self.counts[name] += x.shape[0]

    @contextmanager
    def collecting(self, names: list[str], active: callable = lambda: True) -> Iterator[None]:
        """Forward pre-hooks on the readers of ``names`` add their inputs (when ``active()``)."""
        handles = []

        def hook_for(name: str):
            def hook(module: nn.Module, args: tuple) -> None:
                if args and isinstance(args[0], torch.Tensor) and active():
                    with torch.no_grad(), torch.autocast(args[0].device.type, enabled=False):
                        self._add(name, module, args[0])
            return hook

        try:
            for name in names:
                for reader in self.targets[name].readers:
                    handles.append(reader.register_forward_pre_hook(hook_for(name)))
            yield
        finally:
            for h in handles:
                h.remove()

    def all_reduce(self, names: list[str]) -> None:
        """Sum the buffers (and counts) of ``names`` over the ranks of the default process
        group, if one is up: one collective per buffer."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        for name in names:
            dist.all_reduce(self.sums[name])
        counts = torch.tensor([self.counts[n] for n in names], dtype=torch.float64,
                              device=self.sums[names[0]].device if names else "cpu")
        dist.all_reduce(counts)
        for name, c in zip(names, counts.tolist(), strict=True):
            self.counts[name] = int(c)

    def diagonal(self, name: str) -> torch.Tensor:
        s = self.sums[name]
        return s.diagonal() if self.full else s

    def scale(self, name: str) -> torch.Tensor:
        """``sqrt(diag H)`` (``||X_j||_2``, Wanda's weighting) in float32, shaped for
        ``block_mask(scale=...)`` on the weight: ``(1, n)`` per column or ``(n, 1)`` per row."""
        s = self.diagonal(name).clamp_min(0).sqrt().to(torch.float32)
        return s.reshape(1, -1) if self.targets[name].axis == "column" else s.reshape(-1, 1)
