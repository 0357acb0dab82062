"""The warning filters of the whole suite, said once: the notices Lightning and jsonargparse give
about these tiny runs are ignored one by one, by message, and this package's own warnings fail
the test (a test that expects one says so with ``pytest.warns`` or
``tests.helpers.lightning_models.ramp_ends_late``). ``tests/conftest.py`` adds them to pytest's
``filterwarnings``; the worker scripts that tests run in subprocesses apply them with ``apply()``.
Later entries win over earlier ones."""

from __future__ import annotations

import warnings

LIGHTNING_NOTICES = (
    "ignore:The number of training batches .* is smaller than the logging interval:UserWarning",
    "ignore:You defined a `validation_step` but have no `val_dataloader`:UserWarning",
    "ignore:.*does not have many workers:UserWarning",
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated",
    "ignore:No seed found, seed set to 0",
    "ignore:Checkpoint directory .* exists and is not empty:UserWarning",
    "ignore:Be aware that when using `ckpt_path`, callbacks used to create the checkpoint:UserWarning",
    "ignore:You're resuming from a checkpoint that ended before the epoch ended:UserWarning",
    r"ignore:You passed `Trainer\(accelerator='cpu', precision='16-mixed'\)`:UserWarning",
    "ignore:LightningCLI's args parameter is intended to run from within Python:UserWarning",
    r"ignore:\s*By default only one JsonargparseDeprecationWarning per type is shown",
    r"ignore:\s*``ArgumentParser.add_instantiator`` was deprecated",
    r"ignore:\s*``instantiate_classes`` was deprecated",
    r"ignore:\s*skip_none parameter was deprecated",
    r"ignore:\s*Unable to serialize instance",
)
OUR_WARNINGS = (
    r"error:Detected call of `scheduler.step\(\)` before `data_sparsifier.step\(\)`:UserWarning",
    r"error:Seems like `data_sparsifier.step\(\)` has been overridden:UserWarning",
    "error:.*this fit makes .* mask updates and the last uses:UserWarning",
    "error:sparsity_level .* is above 1:UserWarning",
)
WARNING_FILTERS = LIGHTNING_NOTICES + OUR_WARNINGS


def apply() -> None:
    """Install the filters in this process (for scripts run outside pytest), in pytest's order."""
    from _pytest.config import parse_warning_filter

    for spec in WARNING_FILTERS:
        action, message, category, module, lineno = parse_warning_filter(spec, escape=False)
        warnings.filterwarnings(action, message, category, module, lineno)
