"""The accuracy study: what a user keeps at 50/75/90% and 2:4 sparsity on real data, with
this package's callbacks side by side with Lightning's ModelPruning and torch.ao's callbacks
(``python -m benchmarks.accuracy``).

Modules: ``data`` (digits, stdlib text), ``tasks`` (models, loaders, evaluation), ``methods``
(the callbacks compared and their schedules), ``study`` (the runs and the zero counts),
``report`` (Markdown, JSON), ``plot`` (PNG).
"""

from benchmarks.accuracy.study import Row, Settings, Study, run

__all__ = ["Row", "Settings", "Study", "run"]
