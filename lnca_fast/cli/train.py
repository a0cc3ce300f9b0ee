"""`lnca train` (not implemented yet)."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("train", help="(not implemented yet)")
    parser.set_defaults(run=_run)


def _run(args) -> int:
    from . import CLIError

    raise CLIError("'lnca train' is not implemented yet")
