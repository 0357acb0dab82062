"""The study's data: real, shipped with a package, never downloaded.

- ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 images of handwritten digits, 10
  classes), one fixed stratified split (``random_state=0``), pixels scaled to [0, 1].
- ``text``: the bytes of a fixed list of the Python standard library's own source files
  (the training set) and another fixed file (held out), read from ``os.path.dirname(os.__file__)``;
  the vocabulary is the bytes present. File names, sizes and a SHA-256 of the text are
  reported so a result can be tied to its data (the files differ between Python versions).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

DIGITS_TEST_FRACTION = 0.25
TRAIN_FILES = ("argparse.py", "functools.py", "dataclasses.py", "random.py")
HELD_OUT_FILES = ("textwrap.py",)


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor  # (n, 1, 8, 8) float32 in [0, 1]
    y_train: torch.Tensor  # (n,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits() -> Digits:
    """``load_digits`` split 75/25, stratified by class, ``random_state=0``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=0)

    def images(a):
        return torch.tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0

    return Digits(images(x_tr), torch.tensor(y_tr), images(x_te), torch.tensor(y_te))


@dataclass(frozen=True)
class Text:
    train: torch.Tensor  # (n,) int64 token ids
    held_out: torch.Tensor
    vocab: int
    description: str


def _read(names: tuple[str, ...]) -> bytes:
    root = os.path.dirname(os.__file__)
    return b"".join(open(os.path.join(root, name), "rb").read() for name in names)


def text() -> Text:
    """The training and held-out bytes as ids into the sorted set of bytes present in either."""
    train, held_out = _read(TRAIN_FILES), _read(HELD_OUT_FILES)
    present = sorted(set(train) | set(held_out))
    lookup = torch.full((256,), -1, dtype=torch.int64)
    lookup[torch.tensor(present)] = torch.arange(len(present))

    def ids(b: bytes) -> torch.Tensor:
        return lookup[torch.frombuffer(bytearray(b), dtype=torch.uint8).long()]

    digest = hashlib.sha256(train + held_out).hexdigest()[:12]
    description = (f"stdlib {', '.join(TRAIN_FILES)} ({len(train):,} bytes) -> held out {', '.join(HELD_OUT_FILES)} "
                   f"({len(held_out):,} bytes), {len(present)} distinct bytes, sha256 {digest}")
    return Text(ids(train), ids(held_out), len(present), description)
