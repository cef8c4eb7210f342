"""The one label encoding used end to end.

Class labels are integers, attribute labels are floats 0/1, and ``MISSING`` (-1) marks a label the image
does not carry. Soft targets (class distributions, attribute probabilities) are plain probabilities.
"""

MISSING = -1

EXPRESSIONS_7 = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
"""Canonical names of the 7 basic expressions (the order databases use varies; map by name)."""


def au_name(number: int) -> str:
    """Canonical attribute name of a facial action unit: ``au_name(12) == "AU12"``."""
    return f"AU{int(number)}"
