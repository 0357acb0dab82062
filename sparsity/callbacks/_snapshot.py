"""The in-place training-aware copy, made when read: a snapshot of the live model's tensors
at an epoch end, turned into a module copy only if someone reads ``.sparsified``.

In place, the live model is the sparse model, so the per-epoch copy needs no masking: it is
the live model as it was at that epoch end. ``take`` saves that state with one multi-tensor
copy per device into buffers kept from epoch to epoch (no module deep copy, no sparsifier
work); ``materialize`` builds the module around those buffers (no second copy of the data),
after which they belong to the copy and the next ``take`` allocates new ones. The result is
the module the eager copy would have made at the epoch end, whenever it is read: mid-training
(after the live weights changed) or after fit. Module attributes other than parameters and
buffers are copied when read.
"""

from __future__ import annotations

import torch
from torch import nn

from blocksparsity.callbacks import _model


class LiveSnapshot:
    """One epoch end's parameters and buffers of ``module``, on ``device`` (default: theirs)."""

    def __init__(self) -> None:
        self._module: nn.Module | None = None
        self._skip: tuple[object, ...] = ()
        self._device: torch.device | None = None
        self._saved: dict[int, torch.Tensor] = {}  # id of a live tensor -> its saved value
        self._owned = False  # the buffers are ours to reuse (not handed to a copy)
        self.pending = False  # taken and not yet read

    @staticmethod
    def _tensors(module: nn.Module) -> list[torch.Tensor]:
        seen: dict[int, torch.Tensor] = {}
        for t in (*module.parameters(), *module.buffers()):
            seen.setdefault(id(t), t)
        return list(seen.values())

    @torch.no_grad()
    def take(self, module: nn.Module, device: torch.device | None, skip: tuple[object, ...] = ()) -> None:
        """Save ``module``'s tensors now (one ``_foreach_copy_`` per device pair)."""
        live = self._tensors(module)
        reuse = (self._owned and self._module is module and self._device == device
                 and [id(t) for t in live] == list(self._saved)
                 and all(s.shape == t.shape and s.dtype == t.dtype and s.stride() == t.stride()
                         for s, t in zip(self._saved.values(), live, strict=True)))
        if not reuse:
            self._saved = {id(t): torch.empty_like(t, device=device if device is not None else t.device) for t in live}
        groups: dict[tuple[torch.device, torch.device], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for t in live:
            dst = self._saved[id(t)]
            pair = groups.setdefault((dst.device, t.device), ([], []))
            pair[0].append(dst)
            pair[1].append(t.detach())
        for dst, src in groups.values():
            torch._foreach_copy_(dst, src)
        self._module, self._device, self._skip = module, device, skip
        self._owned, self.pending = True, True

    def materialize(self) -> nn.Module:
        """The copy of the module as it was at ``take`` (eval mode; compile wrappers removed);
        the saved tensors become its parameters and buffers."""
        copy = _model.copy_to(self._module, self._device, skip=self._skip, values=self._saved)
        self._owned, self.pending = False, False
        return _model.without_compile_wrappers(copy).eval()

    def clear(self) -> None:
        self.pending = False
