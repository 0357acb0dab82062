"""Sparsifiers, schedulers and Lightning callbacks built on ``kernels``."""
