"""Benchmark harness: our kernels side by side with torch.ao's reference and eager torch.

Run ``python -m benchmarks --help``. Nothing in the installed package (``blocksparsity``) imports this.
"""
