"""The third calibration's rule and pruning (bench/coupling_calibration.py), fixed before measuring, on tables
whose outcome is known by hand."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "coupling_calibration", Path(__file__).resolve().parents[1] / "bench" / "coupling_calibration.py")
calibration = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibration)


def _row(classes, attributes, std=0.01):
    return {"classes": classes, "attributes": attributes, "std": {"classes": std, "attributes": std}}


def _tables(a, b):
    """Two databases, the first informative: candidate rows a and b given as (classes, attributes) per database."""
    return {"demo": {"st": _row(0.50, 0.40), "nc": _row(0.52, 0.45), "a": _row(*a[0]), "b": _row(*b[0])},
            "celeba-hair": {"st": _row(0.80, 0.30), "nc": _row(0.80, 0.25), "a": _row(*a[1]), "b": _row(*b[1])}}


def test_nine_candidates_recipe_weighting_placement():
    assert len(calibration.CANDIDATES) == 9 and len(set(calibration.CANDIDATES)) == 9
    assert not any(c.endswith("/ew/student") for c in calibration.CANDIDATES)


def test_the_qualifying_candidate_with_the_largest_gain_over_the_best_baseline_is_recommended():
    # a: above NC on both tasks where informative, no harm elsewhere; b: more gain on demo, but harms celeba-hair
    tables = _tables(a=[(0.55, 0.47), (0.80, 0.31)], b=[(0.60, 0.55), (0.70, 0.25)])
    decision = calibration.apply_rule(tables, ["a", "b"], ["demo"])
    assert decision["qualified"] == ["a"] and decision["recommended"] == "a"
    assert decision["no_harm"] == {"a": True, "b": False}
    # min over tasks of C - max(ST, NC): demo min(0.03, 0.02), celeba-hair min(0.00, 0.01)
    assert decision["mean_worst_task_gain_vs_best_baseline"]["a"] == pytest.approx((0.02 + 0.0) / 2)
    assert any("(i) celeba-hair classes -0.100" in f for f in decision["failed_where"]["b"])


def test_without_a_qualifier_the_smallest_worst_case_loss_wins_and_the_failures_are_named():
    tables = _tables(a=[(0.52, 0.44), (0.79, 0.25)], b=[(0.53, 0.50), (0.60, 0.30)])
    decision = calibration.apply_rule(tables, ["a", "b"], ["demo"])
    assert decision["qualified"] == [] and decision["recommended"] == "a"  # worst -0.01 against b's -0.20
    assert "(ii) demo classes +0.000" in decision["failed_where"]["a"]


def test_pruning_drops_a_candidate_far_below_nc_anywhere_at_seed_0():
    tables = _tables(a=[(0.52, 0.44), (0.79, 0.25)], b=[(0.53, 0.50), (0.80, 0.21)])
    assert calibration.prune(tables, ["a", "b"]) == {"b": "celeba-hair attributes -0.040 at seed 0"}
