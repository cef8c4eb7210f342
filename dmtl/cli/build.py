"""Command line: ``dmtl build`` (or ``python -m dmtl.preprocessing build``) --database NAME --root RAW_DIR --out DATA_DIR [...]``."""
from __future__ import annotations

import argparse
import sys

from dmtl.cli.common import add_config_arguments, layers, quiet_tensorflow
from dmtl.config import ConfigError
from dmtl.preprocessing.detectors import CHOICES, FACE_CHOICES
from dmtl.preprocessing.images import MAX_PIXELS
from dmtl.preprocessing.process import IMAGE_FORMATS


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, value), the value read as YAML (the one grammar of ``--set``)."""
    from dmtl.config import parse_set
    try:
        (key, value), = parse_set([text]).items()
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return key, value


BUILD_DESCRIPTION = ("Turns a database as published into aligned faces in TFRecord shards, dataset.json and "
                     "manifest.csv (one row per input image). Re-running the same command resumes an interrupted "
                     "build.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dmtl.preprocessing", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    add_arguments(commands.add_parser("build", help="detect, align and resize a database into TFRecord "
                                                          "shards", description=BUILD_DESCRIPTION))
    return p


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--database", help="database adapter name (dmtl.databases)")
    b.add_argument("--root", help="the database folder as published")
    b.add_argument("--out", help="data folder to write (or resume)")
    b.add_argument("--detector", choices=CHOICES, default="auto",
                   help="retinaface: the paper's detector (its weights download once, as retina-face does); "
                        "auto: RetinaFace when its weights are already on disk, else MTCNN; none: use the "
                        "table's landmarks, else its boxes, else resize only (default: auto)")
    b.add_argument("--size", type=int, default=112, help="output side in pixels (default 112)")
    b.add_argument("--workers", type=int, default=1,
                   help="detection processes, one core each; 0 = in this process (default 1)")
    b.add_argument("--shard-size", type=int, default=1000, help="rows per shard (default 1000)")
    b.add_argument("--format", dest="image_format", choices=IMAGE_FORMATS, default="jpeg",
                   help="encoding of the faces in the shards (default jpeg)")
    b.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality (default 95)")
    b.add_argument("--face", dest="face_choice", choices=FACE_CHOICES, default="confident",
                   help="which face to keep when several are found (default: the most confident)")
    b.add_argument("--detector-weights", "--retinaface-weights", dest="detector_weights", default=None,
                   metavar="PATH", help="local retinaface.onnx instead of retina-face's own download and cache "
                                        "($DEEPFACE_HOME/.deepface/weights/retinaface.onnx)")
    b.add_argument("--max-megapixels", type=float, default=MAX_PIXELS / 1e6,
                   help="images larger than this are recorded as too_large (default 50)")
    b.add_argument("--detect-max-side", type=int, default=1280,
                   help="detection runs on a copy whose longer side is at most this (default 1280)")
    b.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="option passed to the database adapter (repeatable)")
    b.add_argument("--runner", choices=("local", "beam"), default="local",
                   help="local: a process pool on this machine (default); beam: the same steps as an Apache Beam "
                        "pipeline (DirectRunner with --workers processes, or --pipeline-options)")
    b.add_argument("--pipeline-options", default=None, metavar="OPTIONS",
                   help="Beam pipeline options as on a Beam command line, e.g. \"--runner=DataflowRunner "
                        "--project=P --region=R\" (with --runner beam)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(b)


def apply_settings(args) -> None:
    """Applies ``--config`` and ``--set`` to the parsed arguments (keys are the flags' names with underscores;
    ``option.KEY`` / ``option: {...}`` are adapter options); unknown keys are errors."""
    file_layer, set_layer = layers(args)
    options = dict(args.option)
    for layer in (file_layer, set_layer):
        for key, value in layer.items():
            key = "detector_weights" if key == "retinaface_weights" else key
            if key in ("option", "options") and isinstance(value, dict):
                options.update(value)
            elif key in ("config", "set_items", "debug", "command") or not hasattr(args, key):
                raise ConfigError(f"unknown build setting {key!r}")
            else:
                setattr(args, key, value)
    args.option = options
    for key in ("database", "root", "out"):
        if not getattr(args, key):
            raise ConfigError(f"--{key} is required")


def run(args) -> int:
    from dmtl.databases import load_database
    from dmtl.preprocessing.detectors.retinaface import MissingWeightsError
    from dmtl.lock import FolderLocked
    from dmtl.preprocessing.pipeline import BuildMismatchError, build

    if isinstance(args.option, list):
        args.option = dict(args.option)
    try:
        apply_settings(args)
        table = load_database(args.database, args.root, **args.option)
        build(table, args.out, detector=args.detector, size=args.size, workers=args.workers,
              shard_size=args.shard_size, image_format=args.image_format, jpeg_quality=args.jpeg_quality,
              face_choice=args.face_choice, retinaface_weights=args.detector_weights,
              max_pixels=int(args.max_megapixels * 1e6), detect_max_side=args.detect_max_side,
              database=args.database, progress=not args.no_progress, runner=args.runner,
              pipeline_options=args.pipeline_options,
              roots=[part.partition("=")[2] or part for part in str(args.root).split(",")])
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished shards are kept in {args.out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (BuildMismatchError, MissingWeightsError, ConfigError, FileNotFoundError, ValueError,
            ImportError, FolderLocked) as error:
        if getattr(args, "debug", False):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    quiet_tensorflow()
    return run(parser().parse_args(argv))
