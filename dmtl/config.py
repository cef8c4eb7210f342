"""Run configuration: ``configs/base.yaml`` <- ``configs/<database>.yaml`` <- ``--config FILE`` <- ``--set``/flags.

Like insightface's arcface_torch: one base file with every key, small per-database overrides. Unknown keys are
errors, so a typo never silently does nothing. The configs are package data (found through importlib.resources).

Method axes (LibMTL-style, each a registry): ``weighting`` (:mod:`dmtl.weighting`), ``architecture``
(:mod:`dmtl.architectures`), ``label_completion`` (:mod:`dmtl.label_completion`), each with ``*_options``. The
``method`` key is a shorthand that sets the three (``tr`` = ew + task_routing + none, ...); an axis named in the
same layer, or in a later one, wins. Couplings: ``coupling_recipe`` picks a preset (:data:`dmtl.coupling.RECIPES`)
and ``coupling`` adjusts it (see :func:`couplings_of`).
"""
from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path

import yaml

SETTINGS = ("st-classes", "st-attributes", "nc", "c")
SETTING_TASKS = {"st-classes": ("classes",), "st-attributes": ("attributes",), "nc": ("classes", "attributes"),
                 "c": ("classes", "attributes")}
# keys whose mappings merge key by key across layers
NESTED = ("loss_weights", "primary_metrics", "weighting_options", "architecture_options",
          "label_completion_options", "coupling", "method_options", "auxiliary")

def method_shorthands() -> dict:
    """``--method`` shorthand -> ``(weighting, architecture, label_completion, axis taking method_options)``,
    generated from the registries: every weighting by its name (on ``shared``), and the architectures, label
    completions and auxiliary terms that declare a ``shorthand`` / ``auxiliary`` (``tr``, ``adashare``, ``jdl``,
    ``st-t``, ``mtpsl``, ``aal``)."""
    from dmtl import architectures, coupling, label_completion, weighting

    table = {name: (name, "shared", "none", "weighting") for name in weighting.REGISTRY}
    for name in architectures.REGISTRY:
        short = architectures.architecture_class(name).shorthand
        if short:
            table[short[0]] = ("ew", name, "none", "architecture")
    for name in label_completion.REGISTRY:
        short = label_completion.completion_class(name).shorthand
        if short:
            table[short[0]] = ("ew", "shared", name, "label_completion")
    for name, short in method_auxiliary().items():
        table[name] = ("ew", "shared", "none", "auxiliary")
    return table


def method_auxiliary() -> dict:
    """Shorthands that switch on an auxiliary term (config ``auxiliary``; method_options become its options):
    ``{shorthand: coupling name}`` for the couplings that declare ``auxiliary``."""
    from dmtl import coupling

    out = {}
    for name in coupling.REGISTRY:
        short = coupling.coupling_class(name).auxiliary
        if short:
            out[short[0]] = name
    return out


AXES = ("weighting", "architecture", "label_completion")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-process")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
EXPORT_FORMATS = ("savedmodel", "onnx", "litert", "preset")


MAX_SHOWN = 200  # characters of a value an error message quotes
MAX_DEPTH = 32  # nesting levels a config file may have
MAX_MESSAGE = 1000


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key or name, wrong type, incompatible choices (one line, at most
    :data:`MAX_MESSAGE` characters, whatever value it quotes)."""

    def __init__(self, message=""):
        message = str(message)
        super().__init__(message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…")


def shown(value) -> str:
    """``repr(value)`` cut to :data:`MAX_SHOWN` characters, computed in bounded time whatever its size (a value
    that is deeply nested or shares parts many times is abbreviated as it is walked)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 4, MAX_SHOWN, MAX_SHOWN
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 12
    text = short.repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


class _Refused(Exception):
    """What :class:`_ConfigLoader` refuses (a YAML alias, too deep a nesting)."""


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (a config has no use for them, and a few bytes of nested aliases expand
    to gigabytes: the "billion laughs") and with at most :data:`MAX_DEPTH` levels of nesting."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"YAML aliases (*{shown(event.anchor)[1:-1]}, line {event.start_mark.line + 1}) are not "
                           f"allowed in a config: write the value out")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1}, column "
                               f"{mark.column + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str):
    """``text`` parsed as a config's YAML (:class:`_ConfigLoader`); raises ``_Refused`` or ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes every value out in full (the loader refuses aliases)."""

    def ignore_aliases(self, data):
        return True


def config_dir():
    """The packaged ``configs`` folder."""
    return importlib.resources.files("dmtl") / "configs"


def _read(path) -> dict:
    try:
        raw = Path(path).read_bytes() if not hasattr(path, "read_bytes") else path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at position {error.start}): save "
                          f"it as UTF-8") from None
    try:
        data = load_yaml(text) or {}
    except _Refused as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: not valid YAML ({first[:MAX_SHOWN]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys to values")
    return data


def parse_set(items) -> dict:
    """``["a=1", "b.c=[x, y]"]`` -> ``{"a": 1, "b": {"c": ["x", "y"]}}``: values read as YAML, dots nest."""
    out: dict = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {shown(item)}")
        try:
            parsed = load_yaml(value) if value.strip() else None
        except _Refused as error:
            raise ConfigError(f"--set {key}: {error}") from None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value {shown(value)} is not valid YAML") from None
        node = out
        parts = [p.strip() for p in key.strip().split(".")]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {shown(part)} is set both as a value and as a mapping")
        node[parts[-1]] = parsed
    return out


def _deep_merge(base, override):
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _deep_merge(out.get(key), value) if isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def expand_method(layer: dict, source: str = "config") -> dict:
    """Expands the ``method`` shorthand of one layer into the three axes (an axis the layer names itself wins),
    and moves ``method_options`` to the options of the method's axis."""
    layer = dict(layer)
    method = layer.get("method")
    options = layer.pop("method_options", None)
    if method is None:
        if options:
            raise ConfigError(f"{source}: method_options needs a method; use weighting_options, "
                              f"architecture_options or label_completion_options")
        return layer
    methods = method_shorthands()
    if method not in methods:
        raise ConfigError(f"{source}: unknown method {shown(method)}; choose from {sorted(methods)}")
    *axes, options_axis = methods[method]
    for axis, value in zip(AXES, axes):
        layer.setdefault(axis, value)
    if method in method_auxiliary():
        name = method_auxiliary()[method]
        auxiliary = dict(layer.get("auxiliary") or {})
        auxiliary[name] = {**(auxiliary.get(name) or {}), **(options or {})}
        layer["auxiliary"] = auxiliary
    elif options:
        layer[f"{options_axis}_options"] = {**(layer.get(f"{options_axis}_options") or {}), **options}
    return layer


def upgrade_legacy(layer: dict) -> dict:
    """Translates keys of earlier configs (``coupling: [dm, sca]`` with ``dm_*``/``sca_direction`` keys, coupling
    weights in ``loss_weights``) into the current ``coupling`` mapping with ``coupling_recipe: printed``."""
    from dmtl.coupling import LEGACY_KEYS, pop_legacy_options

    weights = layer.get("loss_weights") or {}
    if not set(LEGACY_KEYS) & set(layer) and not {"dm", "sca"} & set(weights):
        return layer
    layer = dict(layer)
    coupling = pop_legacy_options(layer)
    names = layer.get("coupling")
    if isinstance(names, list):  # exactly these couplings
        layer["coupling"] = {n: (coupling.get(n, {}) if n in names else False) for n in ("dm", "sca")}
    elif names is None and "coupling" in layer:
        layer["coupling"] = {}
    else:
        layer["coupling"] = {n: o for n, o in coupling.items() if o} or names
    layer.setdefault("coupling_recipe", "printed")
    return layer


def merge(base: dict, override: dict, source: str = "override") -> dict:
    """Returns ``base`` updated by ``override``; mappings in :data:`NESTED` merge key by key (deeply)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in out:
            raise ConfigError(f"{source}: unknown config key {shown(key)} (see dmtl/configs/base.yaml)")
        if key in NESTED and isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_layer(layer: dict, source: str) -> None:
    """Raises a ConfigError naming ``source`` when ``layer`` has a key the configuration does not."""
    merge(base_config(), _layer(layer, str(source)), str(source))


def base_config() -> dict:
    return _read(config_dir() / "base.yaml")


def databases_with_configs() -> list[str]:
    return sorted(p.name[:-5] for p in config_dir().iterdir() if p.name.endswith(".yaml") and p.name != "base.yaml")


def _layer(data: dict, source: str) -> dict:
    return expand_method(upgrade_legacy(data), source)


def resolve(database: str | None = None, config_file=None, overrides: dict | None = None,
            keep_none: bool = False) -> dict:
    """The configuration of a run; ``overrides`` (nested mappings merge) win over files. None values in
    ``overrides`` mean "not given" unless ``keep_none`` (then they set the key to null, as ``--set key=null``)."""
    config = base_config()
    overrides = {k: v for k, v in (overrides or {}).items() if keep_none or v is not None}
    database = overrides.get("database") or database
    file_config = None
    given: set = set()  # the keys some layer above base.yaml sets
    if config_file is not None:
        file_config = _read(config_file)
        database = database or file_config.get("database")
    if database is not None:
        db_file = config_dir() / f"{database}.yaml"
        if db_file.is_file():
            layer = _layer(_read(db_file), str(db_file))
            given |= set(layer)
            config = merge(config, layer, str(db_file))
        else:
            from dmtl.databases import available
            if database not in available():
                raise ConfigError(f"unknown database {shown(database)}; choose from {sorted(set(available()) | set(databases_with_configs()))} "
                                  f"(or pass a --config file for your own)")
        config["database"] = database
    if file_config is not None:
        layer = _layer(file_config, str(config_file))
        given |= set(layer)
        config = merge(config, layer, str(config_file))
    layer = _layer(overrides, "command line")
    given |= set(layer)
    config = merge(config, layer, "command line")
    config = apply_recipe_method(config, given)
    validate(config)
    return config


def apply_recipe_method(config: dict, given) -> dict:
    """In setting ``c``, a coupling recipe that names its weighting and placement (:data:`dmtl.coupling.
    RECIPE_METHODS`, the calibration's ``recommended``) sets them, unless a layer above base.yaml set them."""
    from dmtl.coupling import RECIPE_METHODS

    if config["setting"] != "c":
        return config
    method = RECIPE_METHODS.get(config["coupling_recipe"], {})
    return {**config, **{k: v for k, v in method.items() if k not in given}}


def couplings_of(config: dict) -> list[dict]:
    """The run's couplings as ``[{"name": ..., **options}]``: none unless setting ``c``; else the recipe's,
    adjusted by ``coupling``: a list names exactly the couplings on (with the recipe's options), a mapping
    overrides options per coupling (``{dm: {weight: 0.5}}``) and ``{sca: false}`` removes one. ``relatedness:
    auto`` for dm becomes ``indicator`` with du2014 (Eq. 2 as printed), ``weights`` otherwise."""
    from dmtl import coupling as coupling_lib

    auxiliary = auxiliary_of(config)
    if config["setting"] != "c":
        return auxiliary
    recipe = coupling_lib.recipe(config["coupling_recipe"])
    given = config.get("coupling")
    if given is None:
        chosen = recipe
    elif isinstance(given, (list, tuple)):
        chosen = {name: recipe.get(name, {}) for name in given}
    elif isinstance(given, str):
        chosen = {} if given in ("none", "") else {n.strip(): recipe.get(n.strip(), {}) for n in given.split(",")}
    elif isinstance(given, dict):
        chosen = copy.deepcopy(recipe)
        for name, options in given.items():
            if options is False:
                chosen.pop(name, None)
            elif options is None or options is True:
                chosen.setdefault(name, {})
            elif isinstance(options, dict):
                chosen[name] = {**chosen.get(name, {}), **options}
            else:
                raise ConfigError(f"coupling.{name}: expected a mapping of options, true or false, got {shown(options)}")
    else:
        raise ConfigError(f"coupling: expected a mapping, a list of names or none, got {shown(given)}")
    out = []
    for name, options in chosen.items():
        options = dict(options)
        if name == "dm" and options.get("relatedness", "auto") == "auto":
            options["relatedness"] = "indicator" if config["relatedness"] == "du2014" else "weights"
        out.append({"name": name, **options})
    return out + auxiliary


def auxiliary_of(config: dict) -> list[dict]:
    """The related methods' auxiliary terms switched on by ``auxiliary`` (``{mtpsl: {...}, aal: {pairs: ...}}``,
    ``false`` removes one) as ``[{"name": ..., **options}]``; they need a multi-task setting (nc or c)."""
    from dmtl import coupling as coupling_lib

    given = config.get("auxiliary") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"auxiliary: expected a mapping of term names to options, got {shown(given)}")
    out = []
    for name, options in given.items():
        if options is False:
            continue
        if options is None or options is True:
            options = {}
        if not isinstance(options, dict):
            raise ConfigError(f"auxiliary.{name}: expected a mapping of options, true or false, got {shown(options)}")
        cls = coupling_lib.coupling_class(name)
        if not cls.auxiliary:
            raise ConfigError(f"auxiliary: {shown(name)} is a coupling of the paper, set by coupling_recipe / coupling "
                              f"in setting c (auxiliary terms: "
                              f"{sorted(n for n in coupling_lib.REGISTRY if coupling_lib.coupling_class(n).auxiliary)})")
        if config["setting"] not in ("nc", "c"):
            raise ConfigError(f"auxiliary term {shown(name)} needs both tasks: setting nc or c, not {shown(config['setting'])}")
        out.append({"name": name, **options})
    return out


_TYPES = {"epochs": int, "batch_size": int, "input_size": int, "seed": int, "shuffle_buffer": int,
          "gradient_conflict_batches": int,
          "lr": float, "weight_decay": float, "label_smoothing": float, "head_dropout": float}


# (lowest, lowest allowed?, highest, highest allowed?) per numeric option; None = unbounded
_RANGES = {"epochs": (1, True, None, None), "batch_size": (1, True, None, None), "lr": (0, False, None, None),
           "weight_decay": (0, True, None, None), "label_smoothing": (0, True, 1, False),
           "head_dropout": (0, True, 1, False), "shuffle_buffer": (1, True, None, None), "seed": (0, True, None, None),
           "gradient_conflict_batches": (0, True, 64, True)}


def _check_range(key: str, value, low, low_in, high, high_in) -> None:
    import math
    ok = math.isfinite(float(value)) and (low is None or (value >= low if low_in else value > low)) and (
        high is None or (value <= high if high_in else value < high))
    if not ok:
        lower = "" if low is None else f"{'>=' if low_in else '>'} {low}"
        upper = "" if high is None else f"{'<=' if high_in else '<'} {high}"
        raise ConfigError(f"{key} must be {' and '.join(x for x in (lower, upper) if x)}, got {shown(value)}")


def check_ranges(config: dict) -> None:
    """Every numeric option within its range (before anything is built or written)."""
    for key, bounds in _RANGES.items():
        _check_range(key, config[key], *bounds)
    for key in ("steps_per_epoch", "fold"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or
                                  value < (1 if key == "steps_per_epoch" else 0)):
            raise ConfigError(f"{key} must be null or an integer >= {1 if key == 'steps_per_epoch' else 0}, "
                              f"got {shown(value)}")
    for task, weight in (config["loss_weights"] or {}).items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"loss_weights.{task} must be a number >= 0, got {shown(weight)}")
        _check_range(f"loss_weights.{task}", weight, 0, True, None, None)
    if config["input_size"] is not None:
        from dmtl.models import input_sizes
        try:
            low, high = input_sizes(config["backbone"])
        except ValueError as error:
            raise ConfigError(str(error)) from None
        _check_range(f"input_size (backbone {shown(config['backbone'])})", config["input_size"], low, True, high, True)


def validate(config: dict) -> None:
    """Checks names, types, ranges and the compatibility of the method axes and couplings (before any run
    folder)."""
    if config["setting"] not in SETTINGS:
        raise ConfigError(f"setting {shown(config['setting'])} not in {SETTINGS}")
    if config["database"] is None:
        raise ConfigError("no database: pass --database NAME (e.g. demo) or a --config file that names one")
    for key, kind in _TYPES.items():
        value = config.get(key)
        if value is None and key == "input_size":
            continue  # the data's own size
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind is int and not float(value).is_integer()):
            raise ConfigError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {shown(value)}")
    check_ranges(config)
    formats = config["export_formats"]
    if not isinstance(formats, list) or any(f not in EXPORT_FORMATS for f in formats) or len(set(formats)) < len(
            formats):
        raise ConfigError(f"export_formats must be a list of distinct formats from {list(EXPORT_FORMATS)} ([] for "
                          f"none), got {shown(formats)}")
    for key in ("jit_compile", "run_eagerly"):
        if not isinstance(config[key], bool):
            raise ConfigError(f"{key} must be true or false, got {shown(config[key])}")
    if config["jit_compile"] and config["run_eagerly"]:
        raise ConfigError("jit_compile and run_eagerly exclude each other: XLA compiles the step that run_eagerly "
                          "runs as Python")
    from dmtl.coupling import PLACEMENTS
    for key, allowed in (("strategy", STRATEGIES), ("precision", PRECISIONS), ("coupling_placement", PLACEMENTS)):
        if config[key] not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {shown(config[key])}")
    unknown = set(config["loss_weights"] or {}) - {"classes", "attributes"}
    if unknown:
        raise ConfigError(f"loss_weights: unknown task(s) {sorted(unknown)} (classes, attributes; coupling weights "
                          f"are coupling.<name>.weight)")
    from dmtl import coupling as coupling_lib
    from dmtl.architectures import architecture_class
    from dmtl.label_completion import completion_class
    from dmtl.weighting import weighting_class

    try:
        weighting = weighting_class(config["weighting"])
        architecture = architecture_class(config["architecture"])
        completion = completion_class(config["label_completion"])
        for spec in couplings_of(config):
            coupling_lib.from_config(spec)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    import inspect
    accepted = {"weighting": [n for n, p in inspect.signature(weighting.__init__).parameters.items()
                              if p.kind == p.POSITIONAL_OR_KEYWORD and n != "self"],
                "architecture": architecture.option_names, "label_completion": completion.option_names}
    for axis, names in accepted.items():
        options = config[f"{axis}_options"] or {}
        if not isinstance(options, dict):
            raise ConfigError(f"{axis}_options must be a mapping, got {shown(options)}")
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"{axis}_options: unknown option(s) {unknown} for {shown(config[axis])} "
                              f"(accepted: {sorted(names) or 'none'})")
    from dmtl.data import augment, mixaugment
    try:
        augment.options(config["augment"])
        if config["mixaugment"] not in (None, False):
            augment.parameters("mixaugment", {"alpha": mixaugment.DEFAULT_ALPHA}, config["mixaugment"])
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
    check_combination(config, weighting, architecture, completion)


def check_combination(config: dict, weighting=None, architecture=None, completion=None) -> None:
    """The pieces, setting, backend and strategy of ``config`` combine (:func:`dmtl.compat.problems`, the one
    place that decides); else a ConfigError with every reason."""
    import keras

    from dmtl import compat
    from dmtl.architectures import architecture_class
    from dmtl.label_completion import completion_class
    from dmtl.weighting import weighting_class

    reasons = compat.problems(
        weighting or weighting_class(config["weighting"]), architecture or architecture_class(config["architecture"]),
        couplings_of(config), weighting_name=config["weighting"], architecture_name=config["architecture"],
        setting=config["setting"], backend=keras.backend.backend(), strategy=config["strategy"],
        completion=completion or completion_class(config["label_completion"]))
    if reasons:
        raise ConfigError("; ".join(reasons))


def save(config: dict, path) -> None:
    from dmtl.io import write_text
    write_text(path, yaml.dump(config, Dumper=_NoAliasDumper, sort_keys=True))


def load(path) -> dict:
    """A saved run configuration (earlier formats translated), checked against the current keys."""
    data = _read(path)
    return merge(base_config(), _layer(data, str(path)), str(path))
