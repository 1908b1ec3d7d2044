"""``oat`` command line: one file per sub-command, each a thin layer over a library call.

Every error a user can cause ends in one line on stderr and a non-zero exit; tracebacks
only with ``--debug``.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from oat.errors import OatError, TrainingInterrupted

COMMANDS = ("train", "evaluate", "report", "mix", "export", "demo", "models", "pretrained", "recipes")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block it prints by default hides the one line that matters."""

    def error(self, message: str):
        first = message.splitlines()[0] if message else "bad arguments"
        self.exit(2, f"{self.prog}: error: {first}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = Parser(
        prog="oat", description="Once-for-All Adversarial Training: one model, the accuracy/robustness "
        "trade-off (λ) and, with OATS, the width dialled at test time.")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(f"oat.cli.{name}")
        p = mod.add_parser(sub)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show Python tracebacks on errors")
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``oat`` and ``python -m oat``; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)  # top-level flags take no value
    if command is not None and argv[command] == "evaluate":
        from oat.cli.evaluate import hoist_run

        argv = argv[:command + 1] + hoist_run(argv[command + 1:])
    args, extra = parser.parse_known_args(argv)
    # argparse takes a nargs="*" positional once: key=value overrides placed after an
    # option (``--epochs 3 lr=0.1``) come back as extras; give them to the overrides.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `oat recipes --show X | head`: the reader left. Point stdout at devnull so the
        # interpreter's final flush does not fail again (the Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TrainingInterrupted as e:  # a checkpoint was saved; the message says how to resume
        print(f"oat: {e}", file=sys.stderr)
        return e.exit_code
    except OatError as e:
        if args.debug:
            raise
        print(f"oat: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oat: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if args.debug:
            raise
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        what = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied"}.get(e.errno, e.strerror or str(e))
        print(f"oat: error: cannot write or read{where}: {what}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: say so in one line, the traceback is one flag away
        if args.debug:
            raise
        print(f"oat: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
