"""Every registered weighting x architecture and every database adapter passes the conformance harness."""
import pytest

from dmtl import config, databases
from tests import conformance
from tests.database_fixtures import FIXTURES

PAIRS = conformance.combinations()


@pytest.mark.parametrize("weighting,architecture", PAIRS)
def test_method(weighting, architecture, tmp_path):
    if not conformance.compatible(weighting, architecture):
        with pytest.raises(config.ConfigError, match="one representation shared|its own step"):
            config.resolve("demo", overrides={"weighting": weighting, "architecture": architecture})
        return
    conformance.run_method_test(weighting, architecture, tmp_path)


def test_mirrored_step_for_every_combination(tmp_path):
    pairs = [list(p) for p in PAIRS if conformance.compatible(*p)]
    results = conformance.run_mirrored_steps(pairs, tmp_path)
    assert set(results) == {"/".join(p) for p in pairs}
    for pair, logs in results.items():
        assert logs["replicas"] == 2, pair
        assert logs["loss"] == logs["loss"] and logs["moved"] > 0, (pair, logs)  # finite and a real update


@pytest.mark.parametrize("name", sorted(databases.REGISTRY))
def test_adapter(name, tmp_path):
    assert name in FIXTURES, f"registered adapter {name!r} has no fixture in tests/database_fixtures.py"
    make, options, corrupt = FIXTURES[name]
    conformance.run_adapter_test(name, make, tmp_path, options, corrupt)
