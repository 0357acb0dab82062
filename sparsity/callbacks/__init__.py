"""Lightning callbacks that sparsify a model after (``PostTrainingDataSparsity``) or during
(``TrainingAwareDataSparsity``) training, with torch.ao's contract: pass the sparsifier
(and scheduler) class and arguments; the sparsified copy is ``callback.sparsified``."""

from blocksparsity.callbacks._model import weight_matrices
from blocksparsity.callbacks.post_training import PostTrainingDataSparsity
from blocksparsity.callbacks.training_aware import TrainingAwareDataSparsity

__all__ = ["PostTrainingDataSparsity", "TrainingAwareDataSparsity", "weight_matrices"]
