"""The `hetsfl` command line: each pipeline stage as a subcommand, for use outside Snakemake.

Every subcommand calls the same stage function as the workflow's rule (hetsfl.stages), with the config
values of hetsfl.stages.settings. Bad arguments and paths end in one line naming them, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hetsfl.errors import HetsflError

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the argument and what is valid) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _overhead_value(text: str) -> float | str:
    """A fixed cost per batch: a number (the problem schema checks it) or "measured"."""
    if text == "measured":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'measured'") from None


def _solver_methods() -> list[str]:
    from hetsfl.optim.solvers import SOLVERS

    return list(SOLVERS)


def _train_methods() -> list[str]:
    from hetsfl.stages.common import TRAIN_METHODS

    return list(TRAIN_METHODS)


# Arguments naming files the command writes (a file) or a directory it writes into.
OUTPUT_FILES = ("log", "out", "out_json", "out_csv")
OUTPUT_DIRS = ("out_dir",)
INPUT_FILES = ("config", "scenario", "profile", "problem", "solution")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hetsfl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", help="append log messages to this file")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("check-config", help="validate a configuration file and list its scenarios")
    p.add_argument("config")

    p = sub.add_parser("scenario", help="draw the devices and channels of one scenario")
    p.add_argument("--config", required=True)
    p.add_argument("--name", required=True, help="a scenario name or a sweep point NAME_i")
    p.add_argument("--out", required=True)

    p = sub.add_parser("profile", help="profile the config's model unit by unit")
    p.add_argument("--config", required=True)
    p.add_argument("--out-json", required=True)
    p.add_argument("--out-csv", required=True)

    p = sub.add_parser("problem", help="build a self-contained problem file from a scenario and a profile")
    p.add_argument("--scenario", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--optimizer-state-copies", type=_int_at_least(0), default=1)
    p.add_argument("--compute-model", choices=["flops", "measured"], default="flops",
                   help="measured: each unit's FLOPs = the profile's host FLOP/s x its measured time")
    for key, what in (("per_message_s", "seconds per message"),
                      ("device_batch_flops", "FLOP-equivalents per local iteration on the device"),
                      ("server_batch_flops", "FLOP-equivalents per local iteration on the server for a device")):
        measurable = key != "per_message_s"
        p.add_argument(f"--{key.replace('_', '-')}", type=_overhead_value if measurable else float, default=None,
                       help=f"optional fixed cost (problem overheads.{key}): {what}"
                       + (" (or 'measured': per cut, from the profile's meta.batch_costs)" if measurable else ""))

    p = sub.add_parser("optimize", help="solve a problem file (prints a one-line summary; the file has it all)")
    p.add_argument("--problem", required=True)
    p.add_argument("--method", required=True, choices=_solver_methods())
    p.add_argument("--out", required=True)
    p.add_argument("--max-iters", type=_int_at_least(1), default=100)
    p.add_argument("--exhaustive-limit", type=_int_at_least(1), default=200_000)
    p.add_argument("--seed", type=_int_at_least(0), default=None,
                   help="seed for random_split (default: the problem's); sfl_v2*: the training seed whose order is timed")
    p.add_argument("--rounds", type=_int_at_least(1), default=1, help="sfl_v2*: rounds whose latencies are listed")

    p = sub.add_parser("train", help="train one method with the splits of its solution")
    p.add_argument("--config", required=True)
    p.add_argument("--method", required=True, choices=_train_methods())
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--problem", required=True)
    p.add_argument("--solution", required=True)
    p.add_argument("--out-dir", required=True)
    return parser


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, output paths that are directories or lie below a regular file, and input
    paths that are not files. Errors name the argument and the path."""
    for name in OUTPUT_FILES + OUTPUT_DIRS:
        value = getattr(args, name, None)
        if value is None:
            continue
        path, flag = Path(value), "--" + name.replace("_", "-")
        if name in OUTPUT_FILES and path.is_dir():
            raise HetsflError(f"{flag} {path}: is a directory; give the path of a file")
        if name in OUTPUT_DIRS and path.exists() and not path.is_dir():
            raise HetsflError(f"{flag} {path}: exists and is not a directory")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise HetsflError(f"{flag} {path}: {parent} is a file, not a directory")
                break
    for name in INPUT_FILES:
        value = getattr(args, name, None)
        if value is None:
            continue
        path = Path(value)
        flag = name if (name == "config" and args.command == "check-config") else "--" + name
        if not path.exists():
            raise HetsflError(f"{flag} {path}: no such file")
        if not path.is_file():
            raise HetsflError(f"{flag} {path}: is not a regular file")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_paths(args)
        from hetsfl.io import setup_logging

        setup_logging(args.log)
        return _run(args)
    except HetsflError as exc:
        print(f"hetsfl: error: {exc}", file=sys.stderr)
    except OSError as exc:  # a user-given path that cannot be read or written
        print(f"hetsfl: error: {_os_error_path(args, exc)}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_ERROR


def _os_error_path(args: argparse.Namespace, exc: OSError) -> str:
    """The user-given path an OS error is about: for the temporary file of an atomic write
    (hetsfl.io: .NAME.*.tmp beside NAME), the argument and the path the user gave."""
    if not exc.filename:
        return "cannot read or write a file"
    failed = Path(str(exc.filename))
    for name in OUTPUT_FILES + OUTPUT_DIRS + INPUT_FILES:
        value = getattr(args, name, None)
        if value is None:
            continue
        given = Path(value)
        temporary = failed.parent == given.parent and failed.name.startswith(f".{given.name}.")
        if failed == given or temporary or given in failed.parents:
            return f"--{name.replace('_', '-')} {given}"
    return str(failed)


def _run(args: argparse.Namespace) -> int:
    from hetsfl.config import load_config
    from hetsfl.stages import settings

    if args.command == "check-config":
        from hetsfl.config import all_scenarios

        cfg = load_config(args.config)
        print(f"{args.config}: valid; scenarios: {', '.join(all_scenarios(cfg))}")
    elif args.command == "scenario":
        from hetsfl.config import scenario_spec
        from hetsfl.stages.scenario import stage_scenario

        cfg = load_config(args.config)
        stage_scenario(spec=scenario_spec(cfg, args.name), seed=cfg["seed"], name=args.name, out=args.out)
    elif args.command == "profile":
        from hetsfl.stages.profile import stage_profile

        cfg = load_config(args.config)
        stage_profile(**settings.profile_settings(cfg), out_json=args.out_json, out_csv=args.out_csv)
    elif args.command == "problem":
        from hetsfl.stages.problem import stage_problem

        given = {k: getattr(args, k) for k in ("per_message_s", "device_batch_flops", "server_batch_flops")
                 if getattr(args, k) is not None}
        stage_problem(scenario_path=args.scenario, profile_path=args.profile, out=args.out,
                      optimizer_state_copies=args.optimizer_state_copies, compute_model=args.compute_model,
                      overheads=given or None)
    elif args.command == "optimize":
        from hetsfl.stages.optimize import stage_optimize, summary

        solution = stage_optimize(problem_path=args.problem, method=args.method, out=args.out,
                                  max_iters=args.max_iters, exhaustive_limit=args.exhaustive_limit, seed=args.seed,
                                  rounds=args.rounds)
        print(summary(solution))
    elif args.command == "train":
        from hetsfl.stages.train import stage_train

        cfg = load_config(args.config)
        stage_train(**settings.train_settings(cfg), method=args.method, seed=args.seed, problem_path=args.problem,
                    solution_path=args.solution, out_dir=args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
