"""``lnca bench``: the same command as ``python -m bench``, every argument forwarded to it.

The benchmarks live in ``bench/`` at the repository root, installed as ``lnca_fast.bench`` (like
``reference/`` and ``kernels/``), so this works from a regular ``pip install .`` as well as from a
checkout; ``lnca_fast`` itself never imports them. The import is lazy (the benchmarks pull in
more than the library needs). Forwarding the raw arguments keeps one definition of the options
(``bench/__main__.py``).
"""

from __future__ import annotations

import argparse
import importlib

BENCH_MAIN = "lnca_fast.bench.__main__"


def register(sub) -> None:
    # prefix_chars that no argument uses: every option (even --help) is passed through untouched.
    parser = sub.add_parser(
        "bench", help="efficiency benchmarks (python -m bench); --help for its options", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("args", nargs=argparse.REMAINDER)
    parser.set_defaults(run=_run)


def load_bench_main(name: str | None = None):
    """``main`` of the installed benchmarks (``BENCH_MAIN``), or a CLIError saying they are missing."""
    from . import CLIError

    name = name or BENCH_MAIN

    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not name.startswith(exc.name):
            raise  # a dependency of the benchmarks is missing: its own error says which
        raise CLIError(f"the benchmarks ({name}) are not installed with this lnca_fast: reinstall it "
                       "(`pip install .`, or `pip install -e .` in a checkout)") from None
    return module.main


def _run(args) -> int:
    return load_bench_main()(args.args, prog="lnca bench")
