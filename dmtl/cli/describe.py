"""``dmtl describe --database NAME --root DIR [--option key=value ...] [--relatedness SOURCE]``: a database's label
counts as JSON.

Prints one JSON object: images, class_labelled, attribute_labelled (at least one attribute label), both_labelled,
classes, attributes, splits (the same counts per split) and skipped. With ``--relatedness`` (du2014 | affwild2 |
empirical | FILE.csv) it adds ``relatedness``: the report a coupled run writes (each attribute's informativeness
under the training split's class prior; for ``empirical``, estimated from ``--relatedness-split``, the
co-annotated images per class), and prints its warnings on stderr. A bad database tree exits with code 2 and a
one-line message naming the file and line.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dmtl.cli.common import add_config_arguments, layers, quiet_tensorflow
from dmtl.config import ConfigError, parse_set
from dmtl.databases import available, load_database
from dmtl.databases.base import SPLITS, AnnotationTable, DatabaseFormatError


def counts(table: AnnotationTable) -> dict:
    has_class = table.class_labels() >= 0
    has_attribute = (table.attribute_labels() >= 0).any(axis=1)
    return {"images": len(table), "class_labelled": int(has_class.sum()),
            "attribute_labelled": int(has_attribute.sum()), "both_labelled": int(np.sum(has_class & has_attribute))}


def describe(table: AnnotationTable) -> dict:
    return {**counts(table), "classes": list(table.schema.class_names),
            "attributes": list(table.schema.attribute_names),
            "splits": {s: counts(table.split(s)) for s in SPLITS}, "skipped": dict(table.skipped)}


def relatedness_of(table: AnnotationTable, source: str, split: str) -> dict:
    """The relatedness report (:func:`dmtl.relatedness.report`) of ``source`` for this database."""
    from dmtl import relatedness as relatedness_lib

    classes, attributes = list(table.schema.class_names), list(table.schema.attribute_names)
    train = table.split("train").class_labels()
    prior = relatedness_lib.class_prior(np.bincount(train[train >= 0].astype(np.int64), minlength=len(classes)))
    coannotated = None
    if source == "empirical":
        part = table.split(split)
        class_labels, attribute_labels = part.class_labels(), part.attribute_labels()
        both = (class_labels >= 0) & (attribute_labels >= 0).any(axis=1)
        if not both.any():
            raise ValueError(f"relatedness 'empirical': no image of split {split!r} is labelled for both tasks "
                             f"(choose another --relatedness-split)")
        related = relatedness_lib.from_annotations(class_labels, attribute_labels, classes, attributes,
                                                   missing_classes="zero")
        coannotated = np.bincount(class_labels[both].astype(np.int64), minlength=len(classes))
    else:
        related = relatedness_lib.from_name(source, classes, attributes)
    summary = relatedness_lib.report(related, prior, coannotated)
    for line in relatedness_lib.report_warnings(summary):
        print(f"warning: {line}", file=sys.stderr)
    return {"source": source, **({"split": split} if source == "empirical" else {}), **summary}


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--database", help=f"one of: {', '.join(available())}")
    cmd.add_argument("--root", help="database folder (a pair: name1=DIR1,name2=DIR2)")
    cmd.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="adapter option, value read as YAML (= --set option.KEY=VALUE)")
    cmd.add_argument("--relatedness", metavar="SOURCE",
                     help="also report how informative a relatedness is: du2014 | affwild2 | empirical | FILE.csv")
    cmd.add_argument("--relatedness-split", default="train",
                     help="the split whose co-annotated images give 'empirical' relatedness (default: train)")
    add_config_arguments(cmd)


def run(args) -> int:
    try:
        file_layer, set_layer = layers(args)
        settings = {**file_layer, **set_layer}
        options = {**settings.pop("option", {}), **settings.pop("options", {}), **parse_set(args.option)}
        for key in ("database", "root"):
            if getattr(args, key):
                settings[key] = getattr(args, key)
        unknown = set(settings) - {"database", "root"}
        if unknown:
            raise ConfigError(f"unknown describe setting(s) {sorted(unknown)}")
        if not settings.get("database") or not settings.get("root"):
            raise ConfigError("--database and --root are required")
        table = load_database(settings["database"], settings["root"], **options)
        result = describe(table)
        if getattr(args, "relatedness", None):
            result["relatedness"] = relatedness_of(table, args.relatedness, args.relatedness_split)
    except (DatabaseFormatError, ValueError, TypeError, ModuleNotFoundError, KeyError, FileNotFoundError) as error:
        if getattr(args, "debug", False):
            raise
        print(f"error: {error}".splitlines()[0], file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


def main(argv=None) -> int:
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m dmtl.databases", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_arguments(commands.add_parser("describe", help="print the label counts of a database as JSON"))
    return run(parser.parse_args(argv))

