"""The ``lnca`` command. Each subcommand lives in its own module with a ``register(subparsers)``
that adds its parser and sets ``run``. User errors (bad arguments, unreadable files, invalid
inputs) print one line and exit 2 with no traceback; outputs are written atomically."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `lnca --help` lists them.
_COMMANDS = ("restore", "demo", "train", "eval", "convert", "bench")


class CLIError(Exception):
    """A user-facing error: printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lnca", description="Latent Neural Cellular Automata for image restoration.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CLIError, ValueError, TypeError, OSError) as exc:
        print(f"lnca {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lnca {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
