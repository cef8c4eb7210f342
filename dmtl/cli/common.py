"""What every subcommand shares: ``--config FILE`` and ``--set key=value`` (one parser, YAML-typed values, dotted
keys nest), quiet TensorFlow start-up, and one-line errors with exit code 2 (``--debug`` shows the traceback)."""
from __future__ import annotations

import argparse
import os
import sys


def quiet_tensorflow(verbose: bool | None = None) -> None:
    """Silences TensorFlow's C++ start-up messages (``--tf-logs`` on the command line brings them back).

    Some are printed by C++ static initialisers before any logging setting applies, so TensorFlow is imported,
    and its devices listed, with the process's stderr sent to a temporary file; if that fails, what it printed is
    shown and the error raised. Must run before anything imports TensorFlow."""
    import tempfile

    verbose = "--tf-logs" in sys.argv if verbose is None else verbose
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if verbose or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="a YAML file of settings (keys as for --set)")
    parser.add_argument("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
                        help="any setting, value read as YAML; dots nest (e.g. --set coupling.dm.weight=0.5); "
                             "repeatable, wins over --config")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--tf-logs", action="store_true", help="show TensorFlow's C++ start-up messages")


def layers(args) -> tuple[dict, dict]:
    """``(settings from --config, settings from --set)``."""
    from dmtl.config import _read, parse_set
    file_layer = _read(args.config) if getattr(args, "config", None) else {}
    return file_layer, parse_set(getattr(args, "set_items", []))


def fail(prog: str, error: BaseException, debug: bool = False) -> int:
    """Prints ``prog: message`` (one line) and returns 2; with ``debug`` re-raises."""
    if debug:
        raise error
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, KeyError):
        message = message.strip("\"'")
    print(f"{prog}: {message}", file=sys.stderr)
    return 2


def standalone(prog: str, doc: str, add_arguments, run, argv=None) -> int:
    """A subcommand as its own program (``dmtl-train``, ``dmtl-evaluate``, ...): quiet start, its arguments, run."""
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
