"""``python -m dmtl.databases describe --database NAME --root DIR [--option key=value ...]``: label counts as JSON.

Prints one JSON object: images, class_labelled, attribute_labelled (at least one attribute label), both_labelled,
classes, attributes, splits (the same counts per split) and skipped. A bad database tree exits with code 2 and a
one-line message naming the file and line.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys

import numpy as np

from dmtl.databases import available, load_database
from dmtl.databases.base import SPLITS, AnnotationTable, DatabaseFormatError


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with value read as a Python literal (int, float, list, ...), true/false/none, or a string."""
    if "=" not in text:
        raise ValueError(f"option {text!r} should be key=value")
    key, value = (part.strip() for part in text.split("=", 1))
    words = {"true": True, "false": False, "none": None}
    if value.lower() in words:
        return key, words[value.lower()]
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def counts(table: AnnotationTable) -> dict:
    has_class = table.class_labels() >= 0
    has_attribute = (table.attribute_labels() >= 0).any(axis=1)
    return {"images": len(table), "class_labelled": int(has_class.sum()),
            "attribute_labelled": int(has_attribute.sum()), "both_labelled": int(np.sum(has_class & has_attribute))}


def describe(table: AnnotationTable) -> dict:
    return {**counts(table), "classes": list(table.schema.class_names),
            "attributes": list(table.schema.attribute_names),
            "splits": {s: counts(table.split(s)) for s in SPLITS}, "skipped": dict(table.skipped)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmtl.databases", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("describe", help="print the label counts of a database as JSON")
    cmd.add_argument("--database", required=True, help=f"one of: {', '.join(available())}")
    cmd.add_argument("--root", required=True, help="database folder (a pair: name1=DIR1,name2=DIR2)")
    cmd.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    args = parser.parse_args(argv)
    try:
        options = dict(parse_option(o) for o in args.option)
        table = load_database(args.database, args.root, **options)
    except (DatabaseFormatError, ValueError, TypeError, ModuleNotFoundError) as error:
        print(f"error: {error}".splitlines()[0], file=sys.stderr)
        return 2
    print(json.dumps(describe(table), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
