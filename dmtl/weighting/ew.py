"""Equal weighting (``ew``): the plain sum of the (configured-weight) task losses."""
from dmtl.weighting.base import Weighting


class EqualWeighting(Weighting):
    """L = sum_t w_t L_t with the fixed weights of the config (the paper's setting: all 1)."""

    name = "ew"
    task_gradients = False  # a plain loss: Keras's own step on every backend

    def combine(self, task_losses, *, tape, features, model):
        return sum(task_losses.values()), {}
