"""The paper's multi-task baselines (Table 5 and the S-T NC MT rows of Table 2), selectable per run with
``train.py --method ew|mgda|gradnorm|tr|adashare|st-t``.

Task weightings — how the two task losses are combined (``MultiTaskModel(weighting=...)``, :mod:`dmtl.weighting`):

* ``ew`` — equal weighting, L = L_cls + L_att (the paper's setting). :class:`dmtl.weighting.ew.EqualWeighting`.
* ``mgda`` — MGDA-UB (Sener & Koltun 2018): min-norm convex combination of the tasks' gradients with respect to
  the shared features. :class:`dmtl.weighting.mgda.MGDAUB` (options: ``normalisation``).
* ``gradnorm`` — GradNorm (Chen et al. 2018): learned task weights balancing gradient norms at the last shared
  kernel. :class:`dmtl.weighting.gradnorm.GradNorm` (options: ``alpha``, ``lr``, ``shared_variable``).

Architectures — how the network is shared (each a ``MultiTaskModel`` subclass, trained with ``ew`` by default):

* ``tr`` — Task Routing (Strezoski et al. 2019): fixed random per-task channel masks in every conv block, one
  routed pass per task. :func:`models.task_routing.task_routing_model`.
* ``adashare`` — AdaShare (Sun et al. 2020): per-task select/skip policy over residual blocks, searched with
  Gumbel-softmax, then re-trained with the fixed policy. :func:`models.adashare.fit_adashare` runs both phases.

Pipeline — how the labels are completed:

* ``st-t`` — student-teacher soft labels (S-T NC MT): single-task teachers label the images that lack a task's
  labels; the student trains without coupling on ground truth + soft labels.
  :mod:`dmtl.baselines.student_teacher`.

Composition with the coupling losses (L_DM, L_SCA). The model adds the coupling terms after the weighting, so
they compose with every method:

* ``ew``: L = L_cls + L_att + L_DM + L_SCA (the paper's C MT).
* ``mgda`` / ``gradnorm``: the method weights only the two task losses; L_DM and L_SCA are added on top with their
  configured (fixed) weights, outside the min-norm solve / the gradient-norm balancing.
* ``tr`` / ``adashare``: the per-task features differ (routed channels / block paths), but the coupling terms act
  on the two heads' outputs, which both exist for every image, so they still apply unchanged. MGDA-UB does not
  make sense there (it needs one shared representation) and is rejected; ``gradnorm`` works with ``tr``. In the
  AdaShare search phase the policy is trained on L_task + L_coupling + the policy regularisers.
* ``st-t``: the paper's S-T baseline is *without* coupling (it is the alternative to it); coupling can technically
  be switched on (soft class rows are valid targets for L_cls; L_SCA uses the attribute targets, which are then
  partly the teacher's soft labels rather than annotations), but that is not a baseline of the paper.
"""
WEIGHTINGS = ("ew", "mgda", "gradnorm")
ARCHITECTURES = ("tr", "adashare")
PIPELINES = ("st-t",)
METHODS = WEIGHTINGS + ARCHITECTURES + PIPELINES


def method_kind(method: str) -> str:
    """``weighting`` | ``architecture`` | ``pipeline`` for a ``--method`` value."""
    for kind, names in (("weighting", WEIGHTINGS), ("architecture", ARCHITECTURES), ("pipeline", PIPELINES)):
        if method in names:
            return kind
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


__all__ = ["ARCHITECTURES", "METHODS", "PIPELINES", "WEIGHTINGS", "method_kind"]
