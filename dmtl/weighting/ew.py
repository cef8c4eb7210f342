"""Equal weighting (``ew``): the plain sum of the (configured-weight) task losses."""
from dmtl.weighting.base import Weighting


class EqualWeighting(Weighting):
    """L = sum_t w_t L_t with the fixed weights of the config (the paper's setting: all 1)."""

    name = "ew"
    label = "EW"
    plain = True  # the sum every step applies without a weighting (architectures with their own step)
    requires = frozenset()  # a plain loss: Keras's own step on every backend
