"""Lightning callbacks that sparsify a model after (``PostTrainingDataSparsity``) or during
(``TrainingAwareDataSparsity``) training, with torch.ao's contract: pass the sparsifier
(and scheduler) class and arguments; the sparsified copy is ``callback.sparsified``."""

from blocksparsity._versions import MIN_LIGHTNING, installed_version, require

require("lightning", installed_version("lightning"), MIN_LIGHTNING)  # before Lightning's own import can fail

from blocksparsity.callbacks._base import timed_hook  # noqa: E402
from blocksparsity.callbacks._model import weight_matrices  # noqa: E402
from blocksparsity.callbacks.post_training import PostTrainingDataSparsity  # noqa: E402
from blocksparsity.callbacks.training_aware import TrainingAwareDataSparsity  # noqa: E402

__all__ = ["PostTrainingDataSparsity", "TrainingAwareDataSparsity", "timed_hook", "weight_matrices"]
