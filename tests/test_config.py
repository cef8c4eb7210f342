import pytest

from dmtl import config
from dmtl.config import ConfigError


def test_database_file_then_flags_override_base(tmp_path):
    c = config.resolve("celeba", overrides={"epochs": 3, "lr": None})
    assert c["batch_size"] == 200 and c["epochs"] == 3 and c["lr"] == 0.001
    assert c["relatedness"] == "empirical"
    extra = tmp_path / "x.yaml"
    extra.write_text("batch_size: 7\nloss_weights: {classes: 0.5}\ncoupling: {dm: {weight: 0.5}}\n")
    c = config.resolve("celeba", extra, {"batch_size": 9})
    assert c["batch_size"] == 9
    assert c["loss_weights"] == {"classes": 0.5, "attributes": 1.0}
    assert {"name": "dm", "weight": 0.5} in [{k: v for k, v in x.items() if k in ("name", "weight")}
                                             for x in config.couplings_of(c)]


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("batchsize: 7\n")
    with pytest.raises(ConfigError, match="batchsize"):
        config.resolve("demo", bad)
    with pytest.raises(ConfigError):
        config.resolve("demo", overrides={"setting": "mt"})
    with pytest.raises(ConfigError, match="no database"):
        config.resolve(None)
    with pytest.raises(ConfigError, match="unknown database 'jafe'"):
        config.resolve("jafe")
    with pytest.raises(ConfigError, match="epochs"):
        config.resolve("demo", overrides={"epochs": "ten"})
    with pytest.raises(ConfigError, match="loss_weights"):
        config.resolve("demo", overrides={"loss_weights": {"clases": 5}})
    with pytest.raises(ConfigError, match="temperature"):
        config.resolve("demo", overrides={"coupling": {"sca": {"temperature": -1}}})
    with pytest.raises(ConfigError, match="unknown coupling"):
        config.resolve("demo", overrides={"coupling": {"dmm": {}}})
    with pytest.raises(ConfigError, match="not valid YAML"):
        bad.write_text("epochs: !!python/object:os.system ls\n")
        config.resolve("demo", bad)


def test_every_shipped_config_resolves():
    for name in config.databases_with_configs():
        assert config.resolve(name)["database"] == name


def test_save_load_round_trip(tmp_path):
    c = config.resolve("demo", overrides={"seed": 4, "coupling": {"sca": False, "dm": {"form": "distillation",
                                                                                           "target": "both"}}})
    config.save(c, tmp_path / "config.yaml")
    assert config.load(tmp_path / "config.yaml") == c


def test_method_shorthand_sets_the_three_axes_and_explicit_axes_win():
    c = config.resolve("demo", overrides={"method": "tr", "method_options": {"sharing_ratio": 0.3}})
    assert (c["weighting"], c["architecture"], c["label_completion"]) == ("ew", "task_routing", "none")
    assert c["architecture_options"] == {"sharing_ratio": 0.3}
    c = config.resolve("demo", overrides={"method": "tr", "weighting": "gradnorm"})  # TR + GradNorm
    assert (c["weighting"], c["architecture"]) == ("gradnorm", "task_routing")
    c = config.resolve("demo", overrides={"method": "st-t", "setting": "nc"})
    assert c["label_completion"] == "student_teacher"
    with pytest.raises(ConfigError, match="one representation shared"):
        config.resolve("demo", overrides={"method": "tr", "weighting": "mgda"})
    with pytest.raises(ConfigError, match="supports settings"):
        config.resolve("demo", overrides={"method": "st-t", "setting": "c"})
    with pytest.raises(ConfigError, match="unknown method"):
        config.resolve("demo", overrides={"method": "tr2"})


def test_coupling_recipes_and_adjustments():
    printed = config.resolve("demo", overrides={"coupling_recipe": "printed"})
    assert config.couplings_of(printed) == [{"name": "dm", "relatedness": "indicator"}, {"name": "sca"}]
    assert config.couplings_of(config.resolve("demo", overrides={"setting": "nc"})) == []
    only_dm = config.resolve("demo", overrides={"coupling_recipe": "printed", "coupling": ["dm"]})
    assert [c["name"] for c in config.couplings_of(only_dm)] == ["dm"]
    removed = config.resolve("demo", overrides={"coupling_recipe": "printed", "coupling": {"dm": False}})
    assert [c["name"] for c in config.couplings_of(removed)] == ["sca"]
    none = config.resolve("demo", overrides={"coupling": "none"})
    assert config.couplings_of(none) == []
    empirical = config.resolve("celeba", overrides={"coupling_recipe": "printed"})
    assert config.couplings_of(empirical)[0]["relatedness"] == "weights"


def test_legacy_configs_translate(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text("database: demo\ncoupling: [dm]\ndm_target: mixture-as-target\ndm_normalise: true\n"
                   "loss_weights: {classes: 1.0, attributes: 1.0, dm: 0.5}\nmethod: tr\nmethod_options: {}\n")
    c = config.load(old)
    assert config.couplings_of(c) == [{"name": "dm", "target": "mixture-as-target", "scale": "mean",
                                       "weight": 0.5, "relatedness": "indicator"}]
    assert c["coupling_recipe"] == "printed" and c["architecture"] == "task_routing"


def test_set_grammar():
    assert config.parse_set(["a=1", "b.c=[x, y]", "d=true", "e=0.5", "f=text"]) == {
        "a": 1, "b": {"c": ["x", "y"]}, "d": True, "e": 0.5, "f": "text"}
    with pytest.raises(ConfigError):
        config.parse_set(["novalue"])


def test_every_option_of_every_subcommand_has_a_help_line():
    import argparse

    from dmtl.cli import parser

    subcommands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [(name, action.option_strings or action.dest) for name, sub in subcommands.items()
               for action in sub._actions if not action.help or not str(action.help).strip()]
    assert len(subcommands) >= 5 and not missing, missing


def test_related_method_shorthands_and_their_incompatibilities_fail_at_config_time():
    c = config.resolve("demo", overrides={"setting": "nc", "method": "mtpsl", "method_options": {"hidden_units": 64}})
    assert c["auxiliary"] == {"mtpsl": {"hidden_units": 64}} and c["architecture"] == "shared"
    assert config.couplings_of(c) == [{"name": "mtpsl", "hidden_units": 64}]
    both = config.resolve("demo", overrides={"setting": "c", "coupling_recipe": "printed", "method": "aal",
                                             "auxiliary": {"aal": {"pairs": [["AU1", "AU2"]]}}})
    assert [t["name"] for t in config.couplings_of(both)] == ["dm", "sca", "aal"]  # combinable with the paper's
    assert config.resolve("demo", overrides={"setting": "nc", "method": "jdl"})["architecture"] == "jdl"
    for overrides, message in [
            ({"setting": "st-classes", "method": "mtpsl"}, "needs both tasks"),
            ({"setting": "nc", "method": "mtpsl", "architecture": "task_routing"}, "different features per task"),
            ({"setting": "nc", "method": "jdl", "weighting": "mgda"}, "its own step"),
            ({"setting": "st-attributes", "method": "jdl"}, "models both tasks"),
            ({"setting": "nc", "auxiliary": {"dm": {}}}, "coupling of the paper"),
            ({"setting": "nc", "auxiliary": {"aal": {"pairs": "AU1"}}}, "pairs must be"),
            ({"setting": "nc", "auxiliary": {"mtpsl": {"depth": 0}}}, "depth must be")]:
        with pytest.raises(config.ConfigError, match=message):
            config.resolve("demo", overrides=overrides)


@pytest.mark.parametrize("key, value, match", [
    ("epochs", -1, "epochs must be >= 1"), ("epochs", 0, "epochs must be >= 1"), ("lr", -1, "lr must be > 0"),
    ("lr", 0, "lr must be > 0"), ("lr", float("nan"), "lr must be > 0"), ("batch_size", 0, "batch_size must be >= 1"),
    ("input_size", 0, "input_size"), ("input_size", 4, "input_size"), ("steps_per_epoch", 0, "steps_per_epoch"),
    ("fold", -1, "fold"), ("weight_decay", -0.1, "weight_decay"), ("label_smoothing", 1.0, "label_smoothing"),
    ("head_dropout", 1.5, "head_dropout"), ("shuffle_buffer", 0, "shuffle_buffer"), ("seed", -3, "seed"),
    ("loss_weights", {"classes": -1}, "loss_weights.classes"),
])
def test_numeric_options_out_of_range_are_refused_before_anything_runs(key, value, match):
    with pytest.raises(ConfigError, match=match):
        config.resolve("demo", overrides={key: value})


def test_numeric_options_at_their_bounds_are_accepted():
    c = config.resolve("demo", overrides={"epochs": 1, "batch_size": 1, "input_size": 8, "steps_per_epoch": 1,
                                          "fold": 0, "weight_decay": 0, "label_smoothing": 0, "seed": 0,
                                          "loss_weights": {"classes": 0}})
    assert c["epochs"] == 1 and c["input_size"] == 8
    with pytest.raises(ConfigError, match="input_size .*resnet50.* >= 32"):
        config.resolve("demo", overrides={"backbone": "resnet50", "input_size": 16})


def test_export_formats_and_step_compilation_are_checked():
    assert config.resolve("demo", overrides={"export_formats": ["savedmodel", "onnx"]})["export_formats"][1] == "onnx"
    assert config.resolve("demo", overrides={"export_formats": []})["export_formats"] == []  # none: sweeps
    for bad in (["savedmodel", "tflite"], ["onnx", "onnx"], "onnx"):
        with pytest.raises(ConfigError, match="export_formats"):
            config.resolve("demo", overrides={"export_formats": bad})
    assert config.resolve("demo", overrides={"run_eagerly": True})["run_eagerly"] is True
    for key in ("run_eagerly", "jit_compile"):
        with pytest.raises(ConfigError, match=f"{key} must be true or false"):
            config.resolve("demo", overrides={key: "yes"})
    with pytest.raises(ConfigError, match="exclude each other"):
        config.resolve("demo", overrides={"run_eagerly": True, "jit_compile": True})


def test_the_recommended_recipe_brings_its_weighting_and_placement_unless_they_are_set(monkeypatch):
    """``dmtl train --setting c`` trains the calibration's recipe x weighting x placement; a weighting or placement
    given anywhere (a file, --set, a flag) wins, and other settings and recipes are untouched."""
    from dmtl import config, coupling

    monkeypatch.setitem(coupling.RECIPE_METHODS, "recommended", {"weighting": "famo", "coupling_placement": "student"})
    chosen = config.resolve("demo", overrides={"setting": "c"})
    assert (chosen["weighting"], chosen["coupling_placement"]) == ("famo", "student")
    mine = config.resolve("demo", overrides={"setting": "c", "weighting": "ew"})
    assert (mine["weighting"], mine["coupling_placement"]) == ("ew", "student")
    assert config.resolve("demo", overrides={"setting": "nc"})["weighting"] == "ew"
    printed = config.resolve("demo", overrides={"setting": "c", "coupling_recipe": "printed"})
    assert (printed["weighting"], printed["coupling_placement"]) == ("ew", "outside")
