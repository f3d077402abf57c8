"""Figures of issue 10's extensions (prints tables; not a test).

1. Optimized server sharing: the duality gap of ``global`` and the gain over equal sharing on random instances
   (tests/conftest.py generator, N <= 6, L in 3..7), and on the default scenario and its device and bandwidth
   sweeps (the config's physical section, the CNN profile counted by hetsfl.profiling); ``ao`` speed at
   N = 10^4 devices x 16 cuts (the random 17-unit profile of bench_optimize.py).
2. Block fading per round: ``static`` (mean gains), ``static_first`` and ``per_round`` over R rounds of the
   rayleigh scenario, and the re-solve time against the round latency.
3. SFL-V2's own clock next to SFL-V1's on the default scenario.

    PYTHONPATH=src:benchmarks:tests python benchmarks/bench_extensions.py [--instances 200] [--rounds 20]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hetsfl.config import load_config, scenario_spec
from hetsfl.optim.build import build_problem
from hetsfl.optim.problem import Problem
from hetsfl.optim.rounds import simulate_rounds
from hetsfl.optim.solvers import solve
from hetsfl.system.scenario import generate_scenario

ROOT = Path(__file__).resolve().parents[1]


def cnn_profile(cfg: dict) -> dict:
    """The config model's per-unit profile (FLOPs are counted, so one timing repeat suffices)."""
    import torch

    from hetsfl.models import build_model
    from hetsfl.profiling.measure import profile_model
    from hetsfl.stages.common import DATASET_CLASSES, DATASET_SHAPES

    torch.manual_seed(cfg["seed"])
    name = cfg["dataset"]["name"]
    model = build_model(cfg["model"], num_classes=DATASET_CLASSES[name], input_shape=DATASET_SHAPES[name])
    rows = profile_model(model, batch_size=32, repeats=1, seed=cfg["seed"])
    return {"meta": {"model": cfg["model"], "bits_per_activation": 32, "bits_per_param": 32}, "units": rows}


def scenario_problem(cfg: dict, profile: dict, name: str = "default", **override) -> Problem:
    spec = {**scenario_spec(cfg, name), **override}
    return Problem.from_dict(build_problem(generate_scenario(spec, cfg["seed"], name), profile))


def with_sharing(p: Problem, sharing: str) -> Problem:
    return dataclasses.replace(p, sharing=sharing)


def part1_random(n_instances: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_problem_doc

    gaps, gains, gains_ao, primal_gap, true_gap = [], [], [], [], []
    t0 = time.perf_counter()
    for seed in range(n_instances):
        rng = np.random.default_rng(10_000 + seed)
        doc = random_problem_doc(rng, 1 + seed % 6, 3 + seed % 5, sharing="optimized")
        g = solve(Problem.from_dict(doc), "global")
        eq_doc = copy.deepcopy(doc)
        eq_doc["server"]["sharing"] = "equal"
        eq = solve(Problem.from_dict(eq_doc), "global")["objective_s"]
        gaps.append(g["duality_gap"])
        if len(doc["devices"]) <= 4:
            ex = solve(Problem.from_dict(doc), "exhaustive")["objective_s"]
            primal_gap.append((g["objective_s"] - ex) / ex)
            true_gap.append((ex - g["lower_bound_s"]) / ex)
        gains.append(eq / g["objective_s"])
        gains_ao.append(eq / solve(Problem.from_dict(doc), "ao")["objective_s"])
    gaps_a = np.array(gaps)
    print(f"\n[1] random instances: {n_instances} (N = 1..6, L = 3..7), {time.perf_counter() - t0:.0f} s")
    print(f"    duality gap of global (relative): median {np.median(gaps_a):.2e}, 90% {np.quantile(gaps_a, 0.9):.2e}, "
          f"max {gaps_a.max():.2e}; instances with gap > 1e-6: {int(np.sum(gaps_a > 1e-6))}")
    print(f"    N <= 4 ({len(primal_gap)} instances): global above exhaustive by more than 1e-9 on "
          f"{int(np.sum(np.array(primal_gap) > 1e-9))}; (exhaustive - lower bound)/exhaustive: median "
          f"{np.median(true_gap):.2e}, max {max(true_gap):.2e}")
    ga = np.array(gains)
    print(f"    equal / optimized (global): median {np.median(ga):.4f}, mean {ga.mean():.4f}, max {ga.max():.4f}, "
          f"min {ga.min():.6f}; equal-global / optimized-ao median {np.median(gains_ao):.4f}")


def part1_scenarios(cfg: dict, profile: dict) -> None:
    print("\n[1] default scenario and sweeps (CNN): round latency (s) by server sharing")
    print(f"    {'point':<22} {'method':<16} {'equal':>10} {'optimized':>10} {'dedicated':>10} {'eq/opt':>7} "
          f"{'gap':>9}")
    points = [("default", {})]
    points += [(f"devices={v}", {"num_devices": v}) for v in cfg["sweeps"]["devices"]["values"]]
    points += [(f"bandwidth={v:g}", {"total_bandwidth_hz": v}) for v in cfg["sweeps"]["bandwidth"]["values"]]
    for label, override in points:
        p = scenario_problem(cfg, profile, **override)
        for method in ("ao", "global", "equal_bandwidth", "fixed_split"):
            r = {s: solve(with_sharing(p, s), method) for s in ("equal", "optimized", "dedicated")}
            gap = r["optimized"].get("duality_gap")
            print(f"    {label:<22} {method:<16} {r['equal']['objective_s']:>10.4f} {r['optimized']['objective_s']:>10.4f} "
                  f"{r['dedicated']['objective_s']:>10.4f} {r['equal']['objective_s'] / r['optimized']['objective_s']:>7.3f} "
                  f"{'' if gap is None else f'{gap:.1e}':>9}")


def part1_speed(repeats: int) -> None:
    from bench_optimize import make_problem, random_profile

    prof = random_profile(0)
    print("\n[1] ao speed with optimized sharing (17 units: 16 cuts), median of", repeats)
    for n in (1000, 10_000):
        p = with_sharing(make_problem(n, 0, prof), "optimized")
        times, walls, eq_times = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sol = solve(p, "ao")
            walls.append(time.perf_counter() - t0)
            times.append(sol["solve_time_s"])
            eq_times.append(solve(with_sharing(p, "equal"), "ao")["solve_time_s"])
        print(f"    N={n:>6}: solve {statistics.median(times):.3f} s (wall {statistics.median(walls):.3f} s), "
              f"equal-sharing ao {statistics.median(eq_times):.3f} s, AO iterations {len(sol['iterations'])}")
    t0 = time.perf_counter()
    g = solve(with_sharing(make_problem(100, 0, prof), "optimized"), "global")
    print(f"    global at N=100: {time.perf_counter() - t0:.2f} s, gap {g['duality_gap']:.1e}")


def part2(cfg: dict, profile: dict, rounds: int) -> None:
    # the rayleigh scenario's large-scale part: the same distances and shadowing, no small-scale draw
    base = scenario_problem(cfg, profile, "rayleigh", fading="none")
    print(f"\n[2] rayleigh scenario, {rounds} rounds of block fading (seed {base.seed}): total simulated time (s)")
    for sharing in ("equal", "optimized"):
        p = with_sharing(base, sharing)
        for method in ("ao", "global", "equal_bandwidth", "fixed_split", "fl", "sl", "sfl_v2_common", "sfl_v2"):
            if sharing == "optimized" and method in ("fl", "sl", "sfl_v2_common", "sfl_v2"):
                continue
            res = {pol: simulate_rounds(p, method, pol, rounds, train_seed=cfg["train"]["seeds"][0])
                   for pol in ("static", "static_first", "per_round")}
            tot = {k: v["sim_time_s"][-1] for k, v in res.items()}
            per = res["per_round"]
            ratio = np.array(per["solve_time_s"]) / np.array(per["round_latency_s"])
            print(f"    {sharing:<9} {method:<16} static {tot['static']:>9.3f}  static_first {tot['static_first']:>9.3f}  "
                  f"per_round {tot['per_round']:>9.3f}  speed-up {tot['static'] / tot['per_round']:.3f}x "
                  f"(vs first {tot['static_first'] / tot['per_round']:.3f}x); re-solve median "
                  f"{np.median(per['solve_time_s']) * 1e3:.1f} ms = {np.median(ratio):.1e} of a round")


def part3(cfg: dict, profile: dict) -> None:
    from hetsfl.optim import sfl_v2

    p = scenario_problem(cfg, profile)
    ao = solve(p, "ao")
    seed = cfg["train"]["seeds"][0]
    rounds = cfg["train"]["rounds"]
    v2_of_v1 = sfl_v2.round_latencies(p, ao["splits"], ao["bandwidth_hz"], seed, rounds)
    print(f"\n[3] default scenario (CNN, N={p.num_devices}), training seed {seed}: round latency (s)")
    print(f"    SFL-V1 (ao, its own clock)                  {ao['objective_s']:.4f}   splits {ao['splits']}")
    print(f"    SFL-V2 clock of the V1 solution             {np.mean(v2_of_v1):.4f} (mean of {rounds} rounds, "
          f"{min(v2_of_v1):.4f}..{max(v2_of_v1):.4f})")
    for method in sfl_v2.V2_METHODS:
        t0 = time.perf_counter()
        sol = sfl_v2.solve_sfl_v2(p, method, seed=seed, rounds=rounds)
        print(f"    {method:<16} (own clock, optimised)      {np.mean(sol['round_latency_s']):.4f} (round 0 "
              f"{sol['objective_s']:.4f}), splits {sol['splits']}, server busy {sol['server_busy_s']:.4f} s, "
              f"solve {time.perf_counter() - t0:.2f} s")
    fixed = solve(p, "fixed_split")
    fl, sl = solve(p, "fl"), solve(p, "sl")
    print(f"    own clocks of the others: sfl_fixed {fixed['objective_s']:.4f} (split {fixed['splits'][0]}), "
          f"fl {fl['objective_s']:.4f}, sl {sl['objective_s']:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--parts", default="1r,1s,1t,2,3")
    args = ap.parse_args()
    cfg = load_config(ROOT / "config" / "config.yaml")
    parts = args.parts.split(",")
    profile = cnn_profile(cfg) if {"1s", "2", "3"} & set(parts) else None
    if "1r" in parts:
        part1_random(args.instances)
    if "1s" in parts:
        part1_scenarios(cfg, profile)
    if "1t" in parts:
        part1_speed(args.repeats)
    if "2" in parts:
        part2(cfg, profile, args.rounds)
    if "3" in parts:
        part3(cfg, profile)


if __name__ == "__main__":
    main()
