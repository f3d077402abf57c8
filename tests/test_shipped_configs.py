"""The optimisation half of every shipped configuration (config/*.yaml) runs for real: scenario, profile,
problem, optimise, tables (`snakemake optimize_all`), in a temporary copy of the workflow. Kept short: the
profile uses batch 4 and 1 timed repeat (the times do not matter here), everything else is the shipped file.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hetsfl.config import all_scenarios, validate_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHIPPED = sorted((REPO / "config").glob("*.yaml"))
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]


def workflow_copy(dest: Path) -> Path:
    for item in ("Snakefile", "workflow", "config", "src", "environment.yml", "profiles", "notebooks"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / item)
    return dest


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_optimisation_half_runs(config, tmp_path):
    work = workflow_copy(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg.setdefault("profile", {}).update({"batch_size": 4, "repeats": 1})
    (work / "short.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "optimize_all", "--cores", "2", "--configfile", "short.yaml"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    full = validate_config(cfg)
    results = next(p for p in [work / "results", *work.glob("results/*")] if (p / "tables/scenarios.csv").exists())
    table = pd.read_csv(results / "tables/scenarios.csv")
    methods = set(full["optimize"]["methods"])
    for scenario in full["scenarios"]:
        rows = table[table["scenario"] == scenario]
        assert set(rows["method"]) >= methods, scenario
        feasible = rows[rows["status"] == "feasible"]
        assert (feasible["objective_s"] > 0).all() and feasible["objective_s"].map(math.isfinite).all()
        infeasible = rows[rows["status"] == "infeasible"]
        assert infeasible["objective_s"].isna().all()
        assert infeasible["reason"].astype(str).str.contains("device").all()
    for sweep, spec in full["sweeps"].items():
        sweep_table = pd.read_csv(results / f"tables/sweep_{sweep}.csv")
        assert len(sweep_table) >= len(spec["values"]) * len(methods)
    assert len(all_scenarios(full)) > 0


def test_paper_memory_limited_fl_is_an_infeasible_row(tmp_path):
    """The case of issue 8: in paper.yaml's memory-limited scenario FL does not fit on some devices. The
    solution says so (naming them) and the table keeps the row; the other methods are solved."""
    from hetsfl.config import load_config, scenario_spec
    from hetsfl.optim.build import build_problem
    from hetsfl.optim.problem import Problem, validate_document
    from hetsfl.optim.solvers import solve_or_infeasible
    from hetsfl.optim.tables import solution_row
    from hetsfl.system.scenario import generate_scenario

    cfg = load_config(REPO / "config/paper.yaml")
    scenario = generate_scenario(scenario_spec(cfg, "memory-limited"), cfg["seed"], "memory-limited")
    # VGG-16's sizes without torch: the profile's FLOPs do not matter for the memory limit, the sizes do.
    torch = pytest.importorskip("torch")
    from hetsfl.models import build_model
    from hetsfl.profiling.measure import profile_model

    torch.manual_seed(0)
    rows = profile_model(build_model("vgg16", num_classes=10, input_shape=(3, 32, 32)), batch_size=2, repeats=1,
                         warmup=0)
    problem = Problem.from_dict(build_problem(scenario, {"meta": {"model": "vgg16"}, "units": rows}))
    fl = solve_or_infeasible(problem, "fl")
    validate_document(fl, "solution", "fl")
    assert fl["status"] == "infeasible" and fl["objective_s"] is None and fl["infeasible_devices"]
    assert all(str(d) in fl["reason"] for d in fl["infeasible_devices"][:5])
    row = solution_row(fl, "memory-limited")
    assert row["status"] == "infeasible" and math.isnan(row["objective_s"])
    ao = solve_or_infeasible(problem, "ao")
    assert ao["status"] == "feasible" and ao["objective_s"] > 0
