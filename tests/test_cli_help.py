"""Every list a flag's help shows comes from the registries: each registered name appears in --help."""
import pytest

from dmtl import architectures, config, coupling, label_completion, models, weighting
from dmtl.preprocessing.detectors import CHOICES as DETECTORS


def _help(main, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "4000")  # no wrapping: a hyphenated name stays whole
    with pytest.raises(SystemExit):
        main(["--help"])
    return capsys.readouterr().out


def test_train_help_lists_every_registered_piece(capsys, monkeypatch):
    from dmtl.cli import train
    text = _help(train.main, capsys, monkeypatch)
    names = [*config.method_shorthands(), *weighting.REGISTRY, *architectures.REGISTRY, *label_completion.REGISTRY,
             *coupling.RECIPES, *models.REGISTRY, *config.STRATEGIES, *config.PRECISIONS]
    assert [n for n in names if n not in text] == []


def test_compare_help_lists_every_method_and_recipe(capsys, monkeypatch):
    from dmtl.cli import compare
    text = _help(compare.main, capsys, monkeypatch)
    assert [n for n in config.method_shorthands() if n not in text] == []
    assert [r for r in coupling.RECIPES if f"c-{r}" not in text] == []


def test_predict_and_build_help_list_every_detector(capsys, monkeypatch):
    from dmtl.cli import build, predict
    text = _help(predict.main, capsys, monkeypatch)
    assert [d for d in DETECTORS if d != "none" and d not in text] == []
    text = _help(lambda argv: build.main(["build", *argv]), capsys, monkeypatch)
    assert [d for d in DETECTORS if d not in text] == [], text
