"""The oldest torch and Lightning this package works on, and the one clear error a user gets at
import where an older one is installed (pip enforces pyproject.toml's bounds, but an environment
can still hold an older release: installs with ``--no-deps``, conda, a torch built from source).

These are pyproject.toml's lower bounds (tests/integration/test_environment.py keeps them equal), proven by
``make test-oldest``. torch 2.7 is the first with ``distribute_tensor(..., src_data_rank=)``
(masks placed like sharded data without a broadcast); 2.8 is the first whose Triton (3.4) runs
the kernels in its interpreter, so the Triton backend is tested there (3.3's interpreter has no
int1 values; the kernels compile for sm_90 on 3.3, but that alone proves no results). Lightning
2.5: FSDP2 through ``ModelParallelStrategy`` with ``torch.distributed.fsdp``'s public names.
"""

from __future__ import annotations

import re
from importlib import metadata

MIN_TORCH = (2, 8)
MIN_LIGHTNING = (2, 5)


def release(version: str) -> tuple[int, ...]:
    """The release numbers at the start of a version string: ``"2.6.0a0+git1"`` -> ``(2, 6, 0)``."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``""`` where no metadata says (a source tree)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def require(package: str, version: str, minimum: tuple[int, ...]) -> None:
    """Raise ImportError naming the version needed when ``version`` of ``package`` is older than ``minimum``."""
    found = release(version)
    if found and found < minimum:
        needed = ".".join(map(str, minimum))
        raise ImportError(
            f"blocksparsity needs {package}>={needed}; this environment has {package} {version}. "
            f"Upgrade it (pip install '{package}>={needed}')."
        )
