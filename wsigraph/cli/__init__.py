"""``wsigraph`` command line: a thin layer over the library.

Each subcommand group lives in its own module with ``register(subparsers)``; ``register`` only declares
arguments and imports nothing heavy, so ``wsigraph --help`` is fast. The handler set with
``set_defaults(func=...)`` does the imports and the work. Cohort commands return their exit status through
``wsigraph.cli._options.job_exit_status(report)``; ``main`` turns a ``WsigraphError`` into 2.

Exit status:
  0  done: every slide processed, or already complete from an earlier run;
  1  finished, but some slides failed (cohort commands: segment, tile, extract, preprocess, build-graphs,
     label-patches, import-srmil, predict); they are listed in the report CSV, whose path is printed;
  2  bad input or usage: the message names the file, row, key or option at fault.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = (
    "wsigraph.cli.data",  # synth, import-srmil, split, label-patches
    "wsigraph.cli.graph",  # build-graphs
    "wsigraph.cli.slide",  # slide-info, segment, tile
    "wsigraph.cli.extract",  # extract, preprocess
    "wsigraph.cli.train",  # train, evaluate, predict
    "wsigraph.cli.viz",  # heatmap
    "wsigraph.cli.view",  # view
    "wsigraph.cli.bench",  # bench
    "wsigraph.cli.demo",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    from wsigraph import __version__

    parser = argparse.ArgumentParser(prog="wsigraph", description=__doc__.splitlines()[0],
                                     epilog=__doc__[__doc__.index("Exit status"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"wsigraph {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("--allocator", choices=("tcmalloc", "jemalloc"), default=None,
                        help="Linux: restart the command under this memory allocator (LD_PRELOAD), which keeps freed "
                             "memory for the next step where glibc's malloc faults it in again: a 200k-patch SRMIL "
                             "step on CPU 2.1x faster under tcmalloc at 1.09x the peak memory (benchmarks/RESULTS.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        # every group ships with wsigraph: a failing import is a broken install or a bug, never a reason to
        # drop commands silently, so it propagates
        importlib.import_module(name).register(sub)
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line. ``KEY=VALUE`` overrides of ``train`` and ``bench`` may stand before or
    after the options (argparse alone gives a ``nargs="*"`` positional only the words before the first
    option, so ``bench --config c.yaml --only-models m seeds=[0]`` would be refused); any other unknown
    word is an error, as with ``parse_args``."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all(
                "=" in t and not t.startswith("-") for t in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wsigraph`` console script. Returns the exit status."""
    from wsigraph.errors import WsigraphError

    parser = build_parser()
    args = parse_command_line(parser, argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose + 1, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.allocator:
            _restart_under_allocator(args.allocator, sys.argv[1:] if argv is None else argv)
        return int(args.func(args) or 0)
    except WsigraphError as e:
        print(f"wsigraph {args.command}: error: {e}", file=sys.stderr)
        return 2


#: set in the environment of the process ``--allocator`` restarts, so that a preload that did not take
#: effect is reported instead of restarting again
RESTARTED = "WSIGRAPH_ALLOCATOR_RESTARTED"


def _restart_under_allocator(name: str, argv: list[str]) -> None:
    """Replace this process by ``python -m wsigraph ARGV`` under the allocator ``name``; return at once when
    it already runs under it."""
    import os

    from wsigraph.errors import InputError
    from wsigraph.utils.memory import allocator_environment

    env = allocator_environment(name)
    if env is None:
        return
    if os.environ.get(RESTARTED):
        raise InputError(f"--allocator {name}: restarted with LD_PRELOAD={os.environ.get('LD_PRELOAD', '')}, but "
                         f"the library is not loaded (is it built for this machine?)")
    env[RESTARTED] = "1"
    logging.getLogger("wsigraph").info("restarting under %s (LD_PRELOAD=%s)", name, env["LD_PRELOAD"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "wsigraph", *argv], env)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
