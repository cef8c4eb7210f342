"""Random loss weighting (``rlw``, Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022): every step draws lambda = softmax(z), z ~ N(0, I), and minimises
    L = sum_t lambda_t L_t.
The softmax runs over the tasks labelled in the batch (an absent task gets no weight). The draw uses the method's
own seeded generator, whose state advances every step (TensorFlow's tape step, or dmtl's own step on JAX and
PyTorch).
"""
from __future__ import annotations

import keras
from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state


class RandomLossWeighting(Weighting):
    """Options: ``seed`` (0). Logs ``rlw_weight_<task>``."""

    name = "rlw"
    label = "RLW"
    requires = frozenset({"stateful_step"})

    def __init__(self, seed: int = 0, **options):
        super().__init__(seed=int(seed), **options)
        self.seed = int(seed)

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        self.generator = keras.random.SeedGenerator(self.seed, name="rlw_seed")
        attach_state(model, "rlw_seed_generator", self.generator)  # its state is the model's (JAX's step)

    def log_names(self, model) -> list[str]:
        return [f"rlw_weight_{t}" for t in model.tasks]

    def weights(self, present_mask):
        """lambda (T,) = softmax of N(0, 1) draws over the present tasks (0 for absent ones)."""
        z = keras.random.normal((len(self.tasks),), seed=self.generator)
        z = ops.where(present_mask, z, -1e9)
        return ops.softmax(z) * ops.cast(present_mask, "float32")

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        mask = ops.stack([present[t] if present is not None and t in present else t in task_losses
                          for t in self.tasks])
        weights = ops.stop_gradient(self.weights(mask))
        total = sum(weights[i] * task_losses[t] for i, t in enumerate(self.tasks) if t in task_losses)
        return total, {f"rlw_weight_{t}": weights[i] for i, t in enumerate(self.tasks)}
