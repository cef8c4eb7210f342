"""Label-completion schemes (what the model trains on where a task's labels are missing), one per module behind
:class:`LabelCompletion`, selected by name (config ``label_completion``, or ``--method st-t``): ``none`` (masked,
the paper's), ``student_teacher`` (S-T NC MT) and ``self_adaptive`` (reliability-weighted pseudo-labels,
``sa-pl``). Adding one is a module plus a line in :data:`REGISTRY`."""
from __future__ import annotations

from dmtl.registry import lookup


from dmtl.label_completion.base import LabelCompletion

REGISTRY = {
    "none": "dmtl.label_completion.base:NoCompletion",
    "student_teacher": "dmtl.label_completion.student_teacher:StudentTeacher",
    "self_adaptive": "dmtl.label_completion.self_adaptive:SelfAdaptive",
}


def completion_class(name: str):
    return lookup(REGISTRY, name, "label_completion")


def get_label_completion(name: str, **options) -> LabelCompletion:
    return completion_class(name)(**options)


__all__ = ["REGISTRY", "LabelCompletion", "completion_class", "get_label_completion"]
