"""The accuracy study: what a user keeps at 50/75/90% and 2:4 sparsity on real data, with
this package's callbacks side by side with Lightning's ModelPruning and torch.ao's callbacks
(``python -m benchmarks.accuracy``)."""
