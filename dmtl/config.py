"""Run configuration: ``configs/base.yaml`` <- ``configs/<database>.yaml`` <- ``--config FILE`` <- flags.

Like insightface's arcface_torch: one base file with every key, small per-database overrides. Unknown keys are
errors, so a typo never silently does nothing.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SETTINGS = ("st-classes", "st-attributes", "nc", "c")
NESTED = ("loss_weights", "primary_metrics", "method_options")


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} not found") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file is a mapping of keys to values")
    return data


def merge(base: dict, override: dict, source: str = "override") -> dict:
    """Returns ``base`` updated by ``override``; nested mappings in :data:`NESTED` merge key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in out:
            raise KeyError(f"{source}: unknown config key {key!r} (see configs/base.yaml)")
        if key in NESTED and isinstance(value, dict):
            out[key] = {**(out[key] or {}), **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_config() -> dict:
    base = _read(CONFIG_DIR / "base.yaml")
    base.setdefault("demo", None)
    return base


def resolve(database: str | None = None, config_file=None, overrides: dict | None = None) -> dict:
    """The configuration of a run; flags (``overrides``, None values ignored) win over files."""
    config = base_config()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    database = overrides.get("database") or database
    if config_file is not None:
        file_config = _read(config_file)
        database = database or file_config.get("database")
    if database is not None:
        db_file = CONFIG_DIR / f"{database}.yaml"
        if db_file.is_file():
            config = merge(config, _read(db_file), str(db_file))
        config["database"] = database
    if config_file is not None:
        config = merge(config, file_config, str(config_file))
    config = merge(config, overrides, "command line")
    validate(config)
    return config


def validate(config: dict) -> None:
    if config["setting"] not in SETTINGS:
        raise ValueError(f"setting {config['setting']!r} not in {SETTINGS}")
    if config["database"] is None:
        raise ValueError("no database: pass --database NAME (e.g. demo) or a --config file that names one")
    if not set(config["coupling"] or ()) <= {"dm", "sca"}:
        raise ValueError(f"coupling {config['coupling']} must be a subset of [dm, sca]")


def save(config: dict, path) -> None:
    Path(path).write_text(yaml.safe_dump(config, sort_keys=True))


def load(path) -> dict:
    return merge(base_config(), _read(path), str(path))
