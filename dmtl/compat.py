"""Which pieces combine: the one place that decides, from what each piece declares.

Pieces declare ``requires`` (and architectures ``provides``) as sets of capabilities:

* ``tape``: TensorFlow's GradientTape step (per-task gradients, state updated after the step, an own update).
  Provided by the TensorFlow backend only.
* ``stateful_step``: a weighting whose state is assigned in the step or after it (DWA, RLW, FAMO, STCH): the tape
  step on TensorFlow, dmtl's own step on JAX and PyTorch (:mod:`dmtl.weighting.step`).
* ``feature_gradients``: gradients of the task losses with respect to the shared features (MGDA-UB, GradDrop):
  the tape on TensorFlow, dmtl's own step on JAX and PyTorch (:mod:`dmtl.weighting.features`).
* ``task_gradients``: per-task gradients of the shared variables: TensorFlow's tape step, or on JAX and PyTorch a
  step of their own (``jax.vjp`` / ``torch.autograd.grad``, :mod:`dmtl.weighting.step`).
* ``shared_features``: one representation shared by every task. Provided by an architecture whose tasks read the
  same features (``shared``), not by one that computes features per task (task routing, AdaShare).
* ``weighting``: provided by an architecture whose step applies the weighting axis; one with its own step (JDL)
  trains with the plain sum, so every other weighting requires it.
* ``both_tasks``: an architecture that models the two tasks jointly (JDL) requires a multi-task setting.

:func:`problems` lists every reason a combination (weighting x architecture x couplings x label completion x
setting x backend x strategy) cannot run; the configuration check, the model's constructor, the conformance
harness and :attr:`dmtl.model.MultiTaskModel.uses_keras_step` all read it or the same declarations.
"""
from __future__ import annotations

TF_STRATEGIES = ("mirrored",)  # tf.distribute strategies (need the TensorFlow backend)
OWN_STEP = frozenset({"task_gradients", "stateful_step", "feature_gradients"})
"""What dmtl's own steps on JAX and PyTorch serve (:mod:`dmtl.weighting.step`); TensorFlow's tape step on TF."""


def requirements(piece) -> frozenset:
    """What a piece (class or instance) requires; ``task_gradients`` and ``stateful_step`` imply ``tape`` on
    TensorFlow (on JAX and PyTorch dmtl's own steps serve them instead: :func:`problems`)."""
    needs = set(getattr(piece, "requires", ()) or ())
    if needs & OWN_STEP:
        needs.add("tape")
    return frozenset(needs)


def provides(piece) -> frozenset:
    return frozenset(getattr(piece, "provides", ()) or ())


def _coupling_needs(name: str, spec: dict | None) -> frozenset:
    from dmtl import coupling as coupling_lib
    needs = set(requirements(coupling_lib.coupling_class(name)))
    if spec and spec.get("rampup_epochs"):
        needs.add("tape")  # the weight follows the optimizer's step count inside the tape step
    return frozenset(needs)


def problems(weighting, architecture, couplings=(), *, weighting_name=None, architecture_name=None,
             setting="nc", backend="tensorflow", strategy="auto", completion=None) -> list[str]:
    """Every reason the combination cannot run (empty: it can). ``weighting`` / ``architecture``: classes or
    instances (a built model works as the architecture); ``couplings``: coupling specs ``{"name": ..., ...}``."""
    w_name = weighting_name or getattr(weighting, "name", "?")
    a_name = architecture_name or getattr(architecture, "name", type(architecture).__name__)
    w_needs, a_needs, a_gives = requirements(weighting), requirements(architecture), provides(architecture)
    reasons = []
    if "weighting" not in a_gives and not getattr(weighting, "plain", False):
        reasons.append(f"architecture {a_name!r} trains with its own step and equal weighting; weighting "
                       f"{w_name!r} does not apply (use ew)")
    if "shared_features" in w_needs and "shared_features" not in a_gives:
        reasons.append(f"weighting {w_name!r} needs one representation shared by every task, but architecture "
                       f"{a_name!r} computes different features per task (use a method that does not read the "
                       f"features)")
    for spec in couplings:
        if "shared_features" in _coupling_needs(spec["name"], spec) and "shared_features" not in a_gives:
            reasons.append(f"auxiliary term {spec['name']!r} reads the representation shared by every task, but "
                           f"architecture {a_name!r} computes different features per task")
    if "both_tasks" in a_needs and setting not in ("nc", "c"):
        reasons.append(f"architecture {a_name!r} models both tasks: setting nc or c, not {setting!r}")
    if completion is not None and setting not in getattr(completion, "settings", (setting,)):
        reasons.append(f"label_completion {getattr(completion, 'name', completion)!r} supports settings "
                       f"{list(completion.settings)}, not {setting!r}")
    if strategy == "multi-process" and backend != "jax":
        reasons.append(f"strategy 'multi-process' runs on KERAS_BACKEND=jax (keras.distribution); Keras 3's "
                       f"TensorFlow trainer does not support MultiWorkerMirroredStrategy (keras-team/keras#20585); "
                       f"on one machine use strategy mirrored")
    if backend != "tensorflow":
        needs = []
        declared = set(getattr(weighting, "requires", ()) or ())
        own_step = bool(declared & OWN_STEP) and declared <= OWN_STEP | {"shared_features"}  # weighting.step
        if "tape" in w_needs and not own_step:
            needs.append(f"weighting {w_name!r} " + (
                "takes gradients with respect to the shared features" if "shared_features" in declared
                else "computes its own gradients in TensorFlow's step"))
        if "tape" in a_needs:
            needs.append(f"architecture {a_name!r} has its own training step")
        for spec in couplings:
            coupling_needs = _coupling_needs(spec["name"], spec)
            if "shared_features" in coupling_needs:
                needs.append(f"auxiliary term {spec['name']!r} reads the shared features")
            elif "tape" in coupling_needs:
                needs.append(f"coupling {spec['name']!r} ramps its weight up with the step count")
        if strategy in TF_STRATEGIES:
            needs.append(f"strategy {strategy!r} is tf.distribute")
        if needs:
            reasons.append(f"KERAS_BACKEND={backend}: {'; '.join(needs)}: these run on the TensorFlow backend only "
                           f"(KERAS_BACKEND=tensorflow)")
    return reasons


def needs_tape(weighting, architecture_own_step: bool, couplings) -> bool:
    """Whether a model of these pieces trains with the TensorFlow tape step (else Keras's own step)."""
    return ("tape" in requirements(weighting) or architecture_own_step
            or any("tape" in requirements(c) for c in couplings))
