"""Every registered weighting x architecture, label completion and database adapter passes the conformance
harness."""
import math
import sys

import pytest

from dmtl import architectures, config, databases, label_completion
from dmtl.models import REGISTRY as BACKBONES
from tests import conformance
from tests.database_fixtures import FIXTURES

PAIRS = conformance.combinations()


@pytest.mark.parametrize("weighting,architecture", PAIRS)
def test_method(weighting, architecture, tmp_path):
    if not conformance.compatible(weighting, architecture):
        with pytest.raises(config.ConfigError, match="one representation shared|its own step"):  # said clearly
            config.resolve("demo", overrides={"weighting": weighting, "architecture": architecture})
        return
    conformance.run_method_test(weighting, architecture, tmp_path)


@pytest.mark.parametrize("architecture", sorted(architectures.REGISTRY))
def test_onnx_export_equals_keras(architecture, tmp_path):
    conformance.run_export_test(architecture, tmp_path)


@pytest.mark.parametrize("name", sorted(label_completion.REGISTRY))
def test_label_completion(name, tmp_path):
    conformance.run_completion_test(name, tmp_path)


def test_mirrored_step_for_every_combination(tmp_path):
    # every architecture with ew (each weighting's mirrored step is compared with the single-device step in
    # tests/test_weighting.py)
    pairs = [list(p) for p in PAIRS if conformance.compatible(*p) and p[0] == "ew"]
    results = conformance.run_mirrored_steps(pairs, tmp_path)
    assert set(results) == {"/".join(p) for p in pairs}
    for pair, logs in results.items():
        assert logs["replicas"] == 2, pair
        assert math.isfinite(logs["loss"]) and logs["moved"] > 0, (pair, logs)  # finite and a real update


@pytest.mark.parametrize("name", sorted(databases.REGISTRY))
def test_adapter(name, tmp_path):
    assert name in FIXTURES, f"registered adapter {name!r} has no fixture in tests/database_fixtures.py"
    make, options, corrupt = FIXTURES[name]
    conformance.run_adapter_test(name, make, tmp_path, options, corrupt)


def test_the_harness_fails_a_weighting_the_step_ignores(monkeypatch):
    """The checks can fail: a gradient-level method that forgets to declare its need, and a step that drops the
    method's direction, are both caught."""
    from dmtl import weighting
    from dmtl.weighting import step
    from dmtl.weighting.pcgrad import PCGrad

    class Undeclared(PCGrad):
        name = "undeclared"
        requires = frozenset()

    monkeypatch.setitem(weighting.REGISTRY, "undeclared", f"{__name__}:Undeclared")
    monkeypatch.setattr(sys.modules[__name__], "Undeclared", Undeclared, raising=False)
    with pytest.raises(AssertionError, match="does not declare"):
        conformance.check_declarations("undeclared")

    original = step.gradient_level_step

    def ignoring(model, tape, task_losses, scaled, scaled_rest, variables, counts):
        method = model.weighting
        keep = method.backward
        method.backward = lambda *a, **k: weighting.Weighting.backward(method, *a, **k)  # the plain sum
        try:
            return original(model, tape, task_losses, scaled, scaled_rest, variables, counts)
        finally:
            method.backward = keep

    monkeypatch.setattr(step, "gradient_level_step", ignoring)
    with pytest.raises(AssertionError, match="did not change the update"):
        conformance.check_weighting_effect("pcgrad", "shared")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone(name, tmp_path):
    conformance.run_backbone_test(name, tmp_path)
