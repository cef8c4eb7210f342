"""Task relatedness p(attribute | class): a K x M matrix of weights in [0, 1].

Three sources, as in the paper: domain knowledge (:func:`du_et_al_2014`, Table 1 top), the empirical Aff-Wild2
table (:func:`affwild2_empirical`, Table 1 bottom), or inferred from a training set's annotations
(:func:`from_annotations`, p(att | cls) = count(cls and att) / count(cls)).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from dmtl.labels import EXPRESSIONS_7, MISSING, au_name

# Du, Tao & Martinez 2014 as given in the paper's Table 1: {expression: {AU: weight}}; prototypical AUs weigh 1,
# observational AUs the fraction of annotators who observed them.
_DU_2014 = {
    "happiness": {12: 1.0, 25: 1.0, 6: 0.51},
    "sadness": {4: 1.0, 15: 1.0, 1: 0.60, 6: 0.50, 11: 0.26, 17: 0.67},
    "fear": {1: 1.0, 4: 1.0, 20: 1.0, 25: 1.0, 2: 0.57, 5: 0.63, 26: 0.33},
    "anger": {4: 1.0, 7: 1.0, 24: 1.0, 10: 0.26, 17: 0.52, 23: 0.29},
    "surprise": {1: 1.0, 2: 1.0, 25: 1.0, 26: 1.0, 5: 0.66},
    "disgust": {9: 1.0, 10: 1.0, 17: 1.0, 4: 0.31, 24: 0.26},
}
# Empirical relatedness on the Aff-Wild2 training set (the paper's Table 1, bottom).
_AFFWILD2 = {
    "happiness": {12: 0.82, 25: 0.70, 6: 0.57, 7: 0.83, 10: 0.63},
    "sadness": {4: 0.53, 15: 0.42, 1: 0.31, 7: 0.13},
    "fear": {1: 0.52, 4: 0.40, 25: 0.85, 7: 0.57, 10: 0.57},
    "anger": {4: 0.65, 7: 0.45, 25: 0.40, 10: 0.33},
    "surprise": {1: 0.38, 2: 0.37, 25: 0.85, 26: 0.30, 5: 0.50, 7: 0.20},
    "disgust": {10: 0.85, 4: 0.60, 7: 0.75, 25: 0.80},
}
ZERO_ROW_CLASSES = ("neutral", "other")
"""Classes that relate to no AU: their rows are all zeros."""


class Relatedness:
    """An immutable K x M matrix of p(attribute | class), with the class and attribute names it is indexed by."""

    __slots__ = ("_class_names", "_attribute_names", "_matrix")

    def __init__(self, class_names, attribute_names, matrix):
        class_names, attribute_names = tuple(map(str, class_names)), tuple(map(str, attribute_names))
        matrix = np.array(matrix, dtype=np.float32, copy=True).reshape(len(class_names), len(attribute_names))
        if len(set(class_names)) != len(class_names) or len(set(attribute_names)) != len(attribute_names):
            raise ValueError("class and attribute names must be unique")
        if not np.all(np.isfinite(matrix)) or matrix.min(initial=0) < 0 or matrix.max(initial=0) > 1:
            raise ValueError("relatedness weights must be finite and in [0, 1]")
        matrix.flags.writeable = False
        object.__setattr__(self, "_class_names", class_names)
        object.__setattr__(self, "_attribute_names", attribute_names)
        object.__setattr__(self, "_matrix", matrix)

    def __setattr__(self, name, value):
        raise AttributeError("Relatedness is immutable")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return self._attribute_names

    @property
    def matrix(self) -> np.ndarray:
        """The (K, M) float32 weights, read-only."""
        return self._matrix

    @property
    def shape(self) -> tuple[int, int]:
        return self._matrix.shape

    def select(self, attribute_names, missing: str = "error") -> "Relatedness":
        """Keeps and reorders attributes by name; ``missing="zero"`` gives unknown attributes an all-zero column."""
        columns = []
        for name in attribute_names:
            if name in self._attribute_names:
                columns.append(self._matrix[:, self._attribute_names.index(name)])
            elif missing == "zero":
                columns.append(np.zeros(len(self._class_names), np.float32))
            else:
                raise KeyError(f"attribute {name!r} not in relatedness attributes {self._attribute_names}")
        matrix = np.stack(columns, axis=1) if columns else np.zeros((len(self._class_names), 0))
        return Relatedness(self._class_names, attribute_names, matrix)

    def reorder_classes(self, class_names, missing: str = "error") -> "Relatedness":
        """Keeps and reorders classes by name; ``missing="zero"`` gives unknown classes an all-zero row."""
        rows = []
        for name in class_names:
            if name in self._class_names:
                rows.append(self._matrix[self._class_names.index(name)])
            elif missing == "zero":
                rows.append(np.zeros(len(self._attribute_names), np.float32))
            else:
                raise KeyError(f"class {name!r} not in relatedness classes {self._class_names}")
        return Relatedness(class_names, self._attribute_names, np.stack(rows))

    def to_csv(self, path) -> None:
        """Writes a CSV: header ``class,<attribute names>``, then one row per class."""
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", *self._attribute_names])
            for name, row in zip(self._class_names, self._matrix):
                writer.writerow([name, *(f"{v:.6g}" for v in row)])

    @classmethod
    def from_csv(cls, path) -> "Relatedness":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or not rows[0] or rows[0][0] != "class":
            raise ValueError(f"{path}: expected a header 'class,<attribute names>'")
        try:
            matrix = [[float(v) for v in row[1:]] for row in rows[1:]]
        except ValueError as error:
            raise ValueError(f"{path}: non-numeric weight ({error})") from None
        if any(len(r) != len(rows[0]) - 1 for r in matrix):
            raise ValueError(f"{path}: every row needs one weight per attribute")
        return cls([r[0] for r in rows[1:]], rows[0][1:], matrix)

    def __eq__(self, other):
        return (isinstance(other, Relatedness) and self._class_names == other._class_names
                and self._attribute_names == other._attribute_names and np.array_equal(self._matrix, other._matrix))

    def __hash__(self):
        return hash((self._class_names, self._attribute_names, self._matrix.tobytes()))

    def __repr__(self):
        width = max([len(c) for c in self._class_names] + [5])
        header = " " * width + " " + " ".join(f"{a:>5}" for a in self._attribute_names)
        lines = [f"Relatedness({len(self._class_names)} classes x {len(self._attribute_names)} attributes)", header]
        for name, row in zip(self._class_names, self._matrix):
            cells = " ".join(f"{v:5.2f}" if v else "    ." for v in row)
            lines.append(f"{name:>{width}} {cells}")
        return "\n".join(lines)


def _from_table(table: dict, class_names, attribute_names, zero_classes) -> Relatedness:
    if attribute_names is None:
        attribute_names = [au_name(n) for n in sorted({au for row in table.values() for au in row})]
    class_names = tuple(EXPRESSIONS_7 if class_names is None else class_names)
    matrix = np.zeros((len(class_names), len(attribute_names)), np.float32)
    for k, name in enumerate(class_names):
        if name in zero_classes:
            continue
        if name not in table:
            raise KeyError(f"expression {name!r} is not in the table ({sorted(table)}); "
                           f"pass zero_classes to give it an all-zero row")
        for au, weight in table[name].items():
            if au_name(au) in attribute_names:
                matrix[k, list(attribute_names).index(au_name(au))] = weight
    return Relatedness(class_names, attribute_names, matrix)


def du_et_al_2014(class_names=None, attribute_names=None, zero_classes=ZERO_ROW_CLASSES) -> Relatedness:
    """Domain-knowledge relatedness (Du, Tao & Martinez 2014; the paper's Table 1, top).

    ``class_names`` sets the expression order (default :data:`dmtl.labels.EXPRESSIONS_7`); ``attribute_names``
    selects and orders AUs (``"AU12"``; default: every AU of the table). AUs outside the table get weight 0.
    """
    return _from_table(_DU_2014, class_names, attribute_names, zero_classes)


def affwild2_empirical(class_names=None, attribute_names=None, zero_classes=ZERO_ROW_CLASSES) -> Relatedness:
    """Empirical relatedness measured on the Aff-Wild2 training set (the paper's Table 1, bottom)."""
    return _from_table(_AFFWILD2, class_names, attribute_names, zero_classes)


def from_annotations(class_labels, attribute_labels, class_names, attribute_names,
                     missing_classes: str = "error") -> Relatedness:
    """Infers p(att_i | cls) = count(cls and att_i = 1) / count(cls, att_i labelled).

    Only images that carry both a class label and the attribute's label count (``-1`` = missing is ignored).
    A class with no such image raises ``ValueError`` unless ``missing_classes="zero"`` (all-zero row).
    Vectorised with ``np.bincount``: millions of rows take well under a second.
    """
    classes = np.asarray(class_labels).astype(np.int64).reshape(-1)
    attributes = np.asarray(attribute_labels, dtype=np.float32)
    num_classes, num_attributes = len(class_names), len(attribute_names)
    if attributes.shape != (classes.shape[0], num_attributes):
        raise ValueError(f"attribute labels have shape {attributes.shape}, expected ({classes.shape[0]}, "
                         f"{num_attributes})")
    if classes.size and (classes.max() >= num_classes or classes.min() < MISSING):
        raise ValueError(f"class labels must be in -1..{num_classes - 1}")
    has_class = classes >= 0
    cls = classes[has_class]
    attrs = attributes[has_class]
    labelled = attrs >= 0
    active = attrs >= 0.5
    counts = np.empty((num_classes, num_attributes), np.float64)
    positives = np.empty((num_classes, num_attributes), np.float64)
    for i in range(num_attributes):
        counts[:, i] = np.bincount(cls, weights=labelled[:, i], minlength=num_classes)
        positives[:, i] = np.bincount(cls, weights=active[:, i] & labelled[:, i], minlength=num_classes)
    never = [class_names[k] for k in range(num_classes) if counts[k].sum() == 0]
    if never and missing_classes != "zero":
        raise ValueError(f"classes {never} never occur together with attribute labels, so p(attribute | class) "
                         f"cannot be inferred for them; pass missing_classes='zero' to give them all-zero rows")
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(counts > 0, positives / np.maximum(counts, 1), 0.0)
    return Relatedness(class_names, attribute_names, matrix)


def from_name(name: str, class_names, attribute_names, fill_missing=None) -> Relatedness:
    """``du2014`` / ``affwild2`` / a CSV path, restricted and ordered to the given classes and attributes.

    A CSV must name every class and attribute of the data (case-sensitive; it may name more): otherwise a
    one-line error lists the missing names and the CSV's names the data lacks, unless ``fill_missing=0``, which
    gives the missing ones all-zero rows and columns."""
    if name in ("du2014", "du_et_al_2014", "domain"):
        return du_et_al_2014(class_names, attribute_names)
    if name in ("affwild2", "affwild2_empirical"):
        return affwild2_empirical(class_names, attribute_names)
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"relatedness {name!r}: not du2014, affwild2, empirical or an existing CSV file")
    if fill_missing not in (None, 0):
        raise ValueError(f"relatedness_fill_missing must be null (missing names are an error) or 0, not "
                         f"{fill_missing!r}")
    table = Relatedness.from_csv(path)
    if fill_missing is None:
        problems = []
        for kind, wanted, given in (("classes", class_names, table.class_names),
                                    ("attributes", attribute_names, table.attribute_names)):
            missing = [n for n in wanted if n not in given]
            if missing:
                unknown = [n for n in given if n not in wanted]
                problems.append(f"{kind} {missing} are missing" + (f" (the file has {unknown}, which the data "
                                                                    f"lacks)" if unknown else ""))
        if problems:
            raise ValueError(f"relatedness {path}: {'; '.join(problems)}; names are case-sensitive; set "
                             f"relatedness_fill_missing: 0 to give missing names weight 0")
    return table.reorder_classes(class_names, missing="zero").select(attribute_names, missing="zero")


# ------------------------------------------------------------------ how much the relatedness says
INFORMATIVENESS = ("correlation-ratio", "mutual-information")
UNINFORMATIVE_BELOW = 0.06
"""Mean correlation ratio under which a relatedness is reported as close to uninformative: Cohen's (1988) 'medium'
effect size for eta^2 (0.01 small, 0.06 medium, 0.14 large)."""
FEW_COANNOTATED = 30
"""Co-annotated images per class under which an empirical estimate of p(attribute | class) is flagged (the
standard error of a proportion from n images is up to 0.5 / sqrt(n): 0.09 at n = 30)."""


def class_prior(class_counts) -> np.ndarray:
    """pi_c from per-class image counts; uniform when no class is counted."""
    counts = np.asarray(class_counts, np.float64).reshape(-1)
    total = counts.sum()
    return np.full(counts.shape, 1.0 / max(len(counts), 1)) if total <= 0 else counts / total


def _entropy_bits(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0.0))


def attribute_informativeness(matrix, prior=None, measure: str = "correlation-ratio") -> np.ndarray:
    """How much the class explains each attribute, from p(a_i | c) (K, M) and the class prior pi (K,), in [0, 1]:

    * ``correlation-ratio``: eta_i^2 = Var_c p(a_i|c) / (pbar_i (1 - pbar_i)), pbar_i = sum_c pi_c p(a_i|c): the
      share of the Bernoulli variance of a_i explained by the class (Pearson's correlation ratio; law of total
      variance), 1 when the class determines the attribute;
    * ``mutual-information``: I(a_i; C) / H(a_i), the uncertainty coefficient (Theil 1970).

    A column constant over the classes (with prior mass) is exactly 0, and so is an attribute with pbar in {0, 1}.
    """
    if measure not in INFORMATIVENESS:
        raise ValueError(f"informativeness measure must be one of {INFORMATIVENESS}, not {measure!r}")
    matrix = np.asarray(getattr(matrix, "matrix", matrix), np.float64)
    k, m = matrix.shape
    prior = class_prior(np.ones(k)) if prior is None else np.asarray(prior, np.float64).reshape(-1)
    if prior.shape != (k,) or np.any(prior < 0) or not np.isclose(prior.sum(), 1.0):
        raise ValueError(f"class prior must be {k} non-negative numbers summing to 1, got {prior.tolist()}")
    weighted = prior > 0
    pbar = prior @ matrix
    if measure == "correlation-ratio":
        explained = prior @ np.square(matrix - pbar)
        total = pbar * (1.0 - pbar)
    else:
        explained = _entropy_bits(pbar) - prior @ _entropy_bits(matrix)  # I(a; C) = H(a) - H(a | C)
        total = _entropy_bits(pbar)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(total > 1e-12, explained / np.maximum(total, 1e-12), 0.0)
    rows = matrix[weighted] if weighted.any() else matrix
    constant = np.ptp(rows, axis=0) == 0 if len(rows) else np.ones(m, bool)
    return np.where(constant, 0.0, np.clip(value, 0.0, 1.0)).astype(np.float32)


def report(relatedness: Relatedness, prior=None, coannotated=None) -> dict:
    """The relatedness report a run folder holds: each attribute's informativeness (both measures), their means,
    whether the relatedness is close to uninformative (mean correlation ratio < :data:`UNINFORMATIVE_BELOW`), and,
    for an empirical estimate, the co-annotated images per class it used (classes under
    :data:`FEW_COANNOTATED` flagged)."""
    prior = class_prior(np.ones(len(relatedness.class_names))) if prior is None else np.asarray(prior)
    eta = attribute_informativeness(relatedness.matrix, prior, "correlation-ratio")
    mutual = attribute_informativeness(relatedness.matrix, prior, "mutual-information")
    out = {"class_prior": dict(zip(relatedness.class_names, np.round(prior, 6).tolist())),
           "attributes": {name: {"correlation_ratio": round(float(e), 6), "mutual_information": round(float(u), 6)}
                          for name, e, u in zip(relatedness.attribute_names, eta, mutual)},
           "mean_correlation_ratio": round(float(eta.mean()) if eta.size else 0.0, 6),
           "mean_mutual_information": round(float(mutual.mean()) if mutual.size else 0.0, 6),
           "uninformative_below": UNINFORMATIVE_BELOW}
    out["uninformative"] = out["mean_correlation_ratio"] < UNINFORMATIVE_BELOW
    if coannotated is not None:
        counts = {name: int(n) for name, n in zip(relatedness.class_names, coannotated)}
        out["coannotated_images_per_class"] = counts
        out["few_coannotated"] = [c for c, n in counts.items() if n < FEW_COANNOTATED]
    return out


def report_warnings(summary: dict) -> list[str]:
    """The one-line warnings a relatedness report calls for."""
    lines = []
    if summary["uninformative"]:
        lines.append(f"relatedness: the classes explain on average {summary['mean_correlation_ratio']:.3f} of the "
                     f"attributes' variance (correlation ratio < {UNINFORMATIVE_BELOW}): the tasks are close to "
                     f"unrelated through this table, so coupling can do little (see relatedness_report.json)")
    if summary.get("few_coannotated"):
        counts = summary["coannotated_images_per_class"]
        lines.append("relatedness: estimated from few co-annotated images for "
                     + ", ".join(f"{c} ({counts[c]})" for c in summary["few_coannotated"])
                     + f" (< {FEW_COANNOTATED} each): those rows are noisy")
    return lines
