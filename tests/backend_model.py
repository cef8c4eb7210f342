"""A tiny multi-task model and batch, built the same way under any Keras backend (no TensorFlow import here)."""
import numpy as np

AUS = ["AU1", "AU2", "AU4", "AU6", "AU12", "AU25"]
SIZE = 24


def build_model():
    from dmtl.coupling import get_coupling
    from dmtl.model import MultiTaskModel
    from dmtl.models import build_backbone
    from dmtl.relatedness import du_et_al_2014

    backbone = build_backbone("small", (SIZE, SIZE, 3), widths=(8, 16), feature_dim=16, dropout=0.0)
    return MultiTaskModel(backbone, 7, len(AUS), relatedness=du_et_al_2014(attribute_names=AUS),
                          attribute_names=AUS, couplings=[get_coupling("dm"), get_coupling("sca")])


def batch(n=12, seed=0):
    """Images in [-1, 1]; half the images labelled for classes only, half for attributes only (one partly)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    classes = rng.integers(0, 7, n).astype(np.int64)
    attributes = rng.integers(0, 2, (n, len(AUS))).astype(np.float32)
    classes[n // 2:] = -1
    attributes[: n // 2] = -1
    attributes[-1, :3] = -1
    return x, {"classes": classes, "attributes": attributes}
