"""The ``dmtl`` command: ``dmtl train | evaluate | build | describe | compare | export | predict``.

Every subcommand takes ``--config FILE`` and ``--set key=value`` (YAML-typed values, dotted keys nest) with one
parser, and ends a user error with one line and exit code 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from dmtl.cli.common import quiet_tensorflow

# subcommand -> (module with add_arguments/run, one-line help)
SUBCOMMANDS = {
    "train": ("dmtl.cli.train", "train one setting of the multi-task model on one database"),
    "evaluate": ("dmtl.cli.evaluate", "evaluate a run with the paper's metrics (metrics.json)"),
    "build": ("dmtl.cli.build", "detect, align and resize a database into TFRecord shards"),
    "describe": ("dmtl.cli.describe", "print a database's label counts as JSON"),
    "compare": ("dmtl.cli.compare", "settings / methods / ablations over seeds, as the paper's tables"),
    "export": ("dmtl.cli.export", "export a run as a SavedModel, ONNX or LiteRT file with its metadata"),
    "predict": ("dmtl.cli.predict", "detect, align and predict every face of photos, folders and videos (CSV)"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dmtl", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        description = (module.__doc__ or help_text).strip()
        sub = commands.add_parser(name, help=help_text, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    return p


def main(argv=None) -> int:
    quiet_tensorflow()
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    module_name = SUBCOMMANDS[args.command][0]
    return importlib.import_module(module_name).run(args)


__all__ = ["SUBCOMMANDS", "main", "parser"]
