import pytest

from dmtl import config


def test_database_file_then_flags_override_base(tmp_path):
    c = config.resolve("celeba", overrides={"epochs": 3, "lr": None})
    assert c["batch_size"] == 200 and c["epochs"] == 3 and c["lr"] == 0.001
    assert c["relatedness"] == "empirical"
    extra = tmp_path / "x.yaml"
    extra.write_text("batch_size: 7\nloss_weights: {dm: 0.5}\n")
    c = config.resolve("celeba", extra, {"batch_size": 9})
    assert c["batch_size"] == 9
    assert c["loss_weights"] == {"classes": 1.0, "attributes": 1.0, "dm": 0.5, "sca": 1.0}


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("batchsize: 7\n")
    with pytest.raises(KeyError, match="batchsize"):
        config.resolve("demo", bad)
    with pytest.raises(ValueError):
        config.resolve("demo", overrides={"setting": "mt"})
    with pytest.raises(ValueError, match="no database"):
        config.resolve(None)


def test_every_shipped_config_resolves():
    for path in sorted(config.CONFIG_DIR.glob("*.yaml")):
        if path.stem != "base":
            assert config.resolve(path.stem)["database"] == path.stem


def test_save_load_round_trip(tmp_path):
    c = config.resolve("demo", overrides={"seed": 4})
    config.save(c, tmp_path / "config.yaml")
    assert config.load(tmp_path / "config.yaml") == c
