"""The `hetsfl` command line: each pipeline stage as a subcommand, for use outside Snakemake."""

from __future__ import annotations

import argparse
import sys

from hetsfl.errors import HetsflError


def _config(path):
    from hetsfl.config import load_config

    return load_config(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hetsfl", description=__doc__)
    parser.add_argument("--log", help="append log messages to this file")
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.add_argument("--optimizer-state-copies", type=int, default=1)

    p = sub.add_parser("optimize", help="solve a problem file")
    p.add_argument("--problem", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-iters", type=int, default=100)
    p.add_argument("--exhaustive-limit", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=None, help="seed for random_split (default: the problem's)")

    p = sub.add_parser("train", help="train one method with the splits of its solution")
    p.add_argument("--config", required=True)
    p.add_argument("--method", required=True, choices=["sfl", "sfl_fixed", "sfl_v2", "fl", "sl"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--problem", required=True)
    p.add_argument("--solution", required=True)
    p.add_argument("--out-dir", required=True)

    args = parser.parse_args(argv)
    from hetsfl.io import setup_logging

    setup_logging(args.log)
    try:
        return _run(args)
    except HetsflError as exc:
        print(f"hetsfl: error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from hetsfl.stages import problem, profile, scenario, train

    if args.command == "check-config":
        from hetsfl.config import all_scenarios

        cfg = _config(args.config)
        print(f"{args.config}: valid; scenarios: {', '.join(all_scenarios(cfg))}")
    elif args.command == "scenario":
        from hetsfl.config import scenario_spec

        cfg = _config(args.config)
        scenario.stage_scenario(scenario_spec(cfg, args.name), cfg["seed"], args.name, args.out)
    elif args.command == "profile":
        profile.stage_profile(_config(args.config), args.out_json, args.out_csv)
    elif args.command == "problem":
        cfg = {"optimize": {"optimizer_state_copies": args.optimizer_state_copies}}
        problem.stage_problem(cfg, args.scenario, args.profile, args.out)
    elif args.command == "optimize":
        from hetsfl.io import write_json
        from hetsfl.optim.problem import Problem, validate_document
        from hetsfl.optim.solvers import solve

        solution = solve(Problem.read(args.problem), args.method, args.max_iters, args.exhaustive_limit, args.seed)
        validate_document(solution, "solution", args.out)
        write_json(args.out, solution)
        print(f"{args.method}: round latency {solution['objective_s']:.6g} s; splits {solution['splits']}")
    elif args.command == "train":
        train.stage_train(_config(args.config), args.method, args.seed, args.problem, args.solution, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
