"""DataNormSparsifier: block-norm masks from ``blocksparsity.kernels``, torch.ao's arguments plus ``backend``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from blocksparsity import kernels
from blocksparsity._level import sparsifier_level
from blocksparsity.base_sparsifier import BaseDataSparsifier
from blocksparsity.kernels.validation import (
    check_backend,
    check_block_shape,
    check_norm,
    check_not_float64,
    check_scale,
    check_zeros_per_block,
)

__all__ = ["DataNormSparsifier"]

CONFIG_KEYS = ("sparsity_level", "sparse_block_shape", "zeros_per_block")


class DataNormSparsifier(BaseDataSparsifier):
    """Zeroes the blocks of lowest L1 (or L2) norm of every tensor it holds.

    For each tensor, ``round(sparsity_level * n_blocks)`` blocks of ``sparse_block_shape``
    with the lowest mean ``|x|`` (or ``x*x``) are pruned, and inside each the
    ``zeros_per_block`` smallest elements are zeroed (default: the whole block, worked
    out per tensor from the block shape it uses). Masks equal torch.ao's on tie-free
    data. 1-D data is one row; N-D data (conv weights) is ``(shape[0], rest)``.

    A scheduled ``sparsity_level`` above 1 (``StepSLScheduler`` with ``gamma=2`` gets
    there) prunes every block, as in torch.ao, with one warning; a level is checked when
    stored and when masks are made from it (``blocksparsity._level`` states the rule).

    Sharded data (``DTensor``: FSDP2 parameters) gets the masks of the whole tensors, as
    DTensors sharded like the data, computed shard by shard (see ``blocksparsity.kernels.block_mask``);
    ``step()`` still syncs once for all tensors.

    Activation-aware scores: ``set_scale(name, scale)`` gives a tensor a ``scale`` for
    ``blocksparsity.kernels.block_mask(scale=...)`` (e.g. ``||X_j||_2`` per input column, from
    ``blocksparsity.calibration``); its masks then rank ``|x| * scale``. Scales are kept in
    ``state_dict()["scales"]`` (plain tensors: ``torch.load(weights_only=True)`` reads them)
    and restored by ``load_state_dict``; a sparsifier without scales has the state dict it
    had before. A scale's values are checked when set, and once more at the first ``step()`` that
    uses it (with every other new scale: one host sync), not again while it is unchanged.

    Args:
        data_list: ``(name, data)`` pairs to add now.
        sparsity_level, sparse_block_shape, zeros_per_block: default config of each tensor.
        norm: ``"L1"`` or ``"L2"``.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see ``blocksparsity.kernels``).
    """

    def __init__(
        self,
        data_list: Iterable[tuple[str, Any]] | None = None,
        sparsity_level: float = 0.5,
        sparse_block_shape: tuple[int, int] = (1, 4),
        zeros_per_block: int | None = None,
        norm: str = "L1",
        backend: str = "auto",
    ):
        self.norm = check_norm(norm)
        self.backend = check_backend(backend)
        self._warned_level_above_one = False
        self._scales: dict[str, torch.Tensor] = {}
        super().__init__(
            data_list,
            sparsity_level=sparsity_level,
            sparse_block_shape=sparse_block_shape,
            zeros_per_block=zeros_per_block,
        )

    def _checked_config(self, config: dict[str, Any], where: str) -> dict[str, Any]:
        unknown = sorted(set(config) - set(CONFIG_KEYS) - {"parametrization"})
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {where}; a DataNormSparsifier config has {list(CONFIG_KEYS)}")
        if "sparsity_level" in config:
            sparsifier_level(config["sparsity_level"], where)
        if "sparse_block_shape" in config:
            try:
                config["sparse_block_shape"] = check_block_shape(config["sparse_block_shape"])
            except (TypeError, ValueError) as err:
                raise type(err)(f"sparse_block_shape in {where}: {err}") from None
            if config.get("zeros_per_block") is not None:
                try:
                    check_zeros_per_block(config["zeros_per_block"], config["sparse_block_shape"])
                except (TypeError, ValueError) as err:
                    raise type(err)(f"{err} (in {where})") from None
        return config

    def _check_data(self, name: str, weight: torch.Tensor) -> None:
        super()._check_data(name, weight)
        check_not_float64(weight.dtype, f"data {name!r}", "add it as float32 (e.g. .float())")

    def _level(self, name: str, sparsity_level: object) -> float:
        """The level masks of ``name`` are made with (a scheduler may have set any value)."""
        level, saturated = sparsifier_level(sparsity_level, f"config of {name!r}")
        if saturated and not self._warned_level_above_one:
            warnings.warn(
                f"sparsity_level {sparsity_level} of {name!r} is above 1; it prunes every block, as 1 does "
                "(warned once per sparsifier)",
                UserWarning,
                stacklevel=4,
            )
            self._warned_level_above_one = True
        return level

    # ---------------------------------------------------------------- scales
    def set_scale(self, name: str, scale: torch.Tensor | None) -> None:
        """Weigh the magnitudes of ``name`` by ``scale`` in its scores and in-block ranks (None:
        plain magnitudes). ``scale`` is checked now against the data (forms, device, values:
        ``blocksparsity.kernels.validation.check_scale``); bad input raises ``TypeError`` or
        ``ValueError`` naming ``scale`` and changes nothing."""
        self._check_name(name)
        if scale is None:
            self._scales.pop(name, None)
            return
        check_scale(scale, self._data[name])
        self._scales[name] = scale.detach()

    def get_scale(self, name: str) -> torch.Tensor | None:
        """The scale of ``name`` (None: plain magnitudes)."""
        self._check_name(name)
        return self._scales.get(name)

    def state_dict(self, with_data: bool = True) -> dict[str, Any]:
        out = super().state_dict(with_data)
        if self._scales:
            out["scales"] = {name: s.clone() for name, s in self._scales.items()}
        return out

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        scales = state_dict.get("scales", {}) if isinstance(state_dict, dict) else {}
        if not isinstance(scales, dict) or not all(isinstance(s, torch.Tensor) for s in scales.values()):
            raise TypeError("state_dict['scales'] must be a dict of tensors by data name")
        super().load_state_dict(state_dict, strict)
        if strict:
            self._scales = {}
        for name, scale in scales.items():
            if strict or name not in self._scales:
                self.set_scale(name, scale.to(self._data[name].device))

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_scales", {})  # pickled before scales existed
        super().__setstate__(state)

    def _new_mask(self, name: str, data: torch.Tensor, config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The new mask of ``name`` and its non-finite flag, without a host sync."""
        return kernels.block_mask_unchecked(
            data.detach(),
            self._level(name, config["sparsity_level"]),
            config["sparse_block_shape"],
            config["zeros_per_block"],
            self.norm,
            scale=self._scales.get(name),
            backend=self.backend,
        )

    def update_mask(self, name: str, data: torch.Tensor, sparsity_level: float, sparse_block_shape: tuple[int, int],
                    zeros_per_block: int | None, **kwargs: Any) -> None:
        """Compute and store the mask of one tensor (``step()`` does all of them at once)."""
        config = {"sparsity_level": sparsity_level, "sparse_block_shape": sparse_block_shape, "zeros_per_block": zeros_per_block}
        mask, bad = self._new_mask(name, data, config)
        kernels.raise_if_nonfinite(bad, f"data {name!r}")
        self._commit_mask(name, mask)

    def step(self) -> None:
        """Recompute every mask, all in one ``foreach_block_mask_unchecked`` call: every
        tensor's arguments are checked before any is read, all tensors are checked for
        NaN/inf with one host sync, and no mask changes unless every tensor is finite."""
        if not self.enable_mask_update:
            return
        names = list(self.data_groups)
        if not names:
            return
        with torch.no_grad():
            configs = [self.data_groups[name] for name in names]
            tensors = [self.get_data(name).detach() for name in names]
            levels = [self._level(name, config["sparsity_level"]) for name, config in zip(names, configs, strict=True)]
            scales = [self._scales.get(name) for name in names] if self._scales else None
            try:
                masks, flags = kernels.foreach_block_mask_unchecked(
                    tensors, levels, [config["sparse_block_shape"] for config in configs],
                    [config["zeros_per_block"] for config in configs], self.norm, scales=scales, backend=self.backend)
            except (TypeError, ValueError) as err:
                raise type(err)(_named(str(err), names)) from None
            flags = torch.stack([bad.to(flags[0].device) for bad in flags])
            bad_names = [name for name, bad in zip(names, flags.tolist(), strict=True) if bad]  # the one sync
            if bad_names:
                raise ValueError(f"data {bad_names} hold NaN or infinite values; no mask was updated")
            for name, mask in zip(names, masks, strict=True):
                self._commit_mask(name, mask)


def _named(message: str, names: list[str]) -> str:
    """A ``foreach_block_mask`` message with each ``tensors[i]`` written as the data's name."""
    return re.sub(r"tensors\[(\d+)\]", lambda m: f"data {names[int(m.group(1))]!r}", message)
