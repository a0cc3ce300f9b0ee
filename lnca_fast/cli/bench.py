"""``lnca bench``: the same command as ``python -m bench``, every argument forwarded to it.

The benchmarks live in ``bench/`` at the repository root and are not part of the installed
package (``lnca_fast`` never imports them on its own). This subcommand therefore works from a
source checkout (``pip install -e .``): it puts the checkout root on ``sys.path`` when it holds
``bench/``, imports ``bench.__main__`` lazily, and otherwise fails with a message saying so.
Forwarding the raw arguments keeps one definition of the options (``bench/__main__.py``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# The checkout root when lnca_fast is installed in editable mode (lnca_fast/cli/bench.py -> root).
_CHECKOUT = Path(__file__).resolve().parents[2]


def register(sub) -> None:
    # prefix_chars that no argument uses: every option (even --help) is passed through untouched.
    parser = sub.add_parser(
        "bench", help="efficiency benchmarks (python -m bench); --help for its options", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("args", nargs=argparse.REMAINDER)
    parser.set_defaults(run=_run)


def load_bench_main():
    """``bench.__main__.main`` from the source checkout, or a CLIError saying what is missing."""
    from . import CLIError

    if not (_CHECKOUT / "bench" / "__main__.py").is_file():
        raise CLIError(
            "the benchmarks are not installed with the package: they live in bench/ of a source checkout. "
            "Clone the repository, `pip install -e .`, then run `lnca bench` or `python -m bench` there"
        )
    root = str(_CHECKOUT)
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module("bench.__main__")
    if Path(module.__file__).resolve().parents[1] != _CHECKOUT:
        raise CLIError(f"'bench' resolves to {module.__file__}, not this checkout's bench/ (a package named 'bench' shadows it)")
    return module.main


def _run(args) -> int:
    return load_bench_main()(args.args, prog="lnca bench")
