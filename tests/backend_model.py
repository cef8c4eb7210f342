"""A tiny multi-task model and batch, built the same way under any Keras backend (no TensorFlow import here)."""
from tests.conformance import AUS, SIZE, partial_data


def build_model(strength: bool = False, weighting: str = "ew"):
    """``strength``: the relatedness-aware readings (distillation with informativeness weights and gates);
    ``weighting``: a loss-level method that runs in Keras's own step (ew, uw)."""
    from dmtl.coupling import get_coupling
    from dmtl.model import MultiTaskModel
    from dmtl.models import build_backbone
    from dmtl.relatedness import du_et_al_2014

    backbone = build_backbone("small", (SIZE, SIZE, 3), widths=(8, 16), feature_dim=16, dropout=0.0)
    couplings = [get_coupling("dm"), get_coupling("sca")]
    if strength:
        couplings = [get_coupling("dm", form="distillation", target="both", informativeness="correlation-ratio",
                                  confidence=0.6, class_prior=[3, 1, 1, 1, 1, 1, 2]),
                     get_coupling("sca", direction="distillation", temperature=0.25,
                                  informativeness="mutual-information", confidence=0.6)]
    return MultiTaskModel(backbone, 7, len(AUS), relatedness=du_et_al_2014(attribute_names=AUS),
                          attribute_names=AUS, couplings=couplings, weighting=weighting)


def batch(n=12, seed=0):
    """The conformance harness's partly annotated batch (half class-only, half attribute-only), one image with
    only some of its attributes labelled."""
    x, y = partial_data(n, len(AUS), seed)
    y["attributes"][-1, :3] = -1
    return x, y
