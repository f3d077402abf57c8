"""End-to-end: the Snakemake pipeline on config/test.yaml in a copy of the workflow.

One run builds everything; the other tests ask Snakemake (dry runs) what it would redo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]


def snakemake(workdir: Path, *args: str, config: str = "config/test.yaml", check: bool = True):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    # Targets and options first: --configfile takes several files and would read a target after it as one.
    cmd = [str(BIN / "snakemake"), *args, "--cores", "2", "--configfile", config]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(proc) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table."""
    lines = proc.stdout.splitlines()
    if any("Nothing to be done" in line for line in lines):
        return {}
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    """A copy of the workflow (Snakefile, rules, scripts, config, src) with the test config run through."""
    work = tmp_path_factory.mktemp("pipeline")
    for item in ("Snakefile", "workflow", "config", "src", "notebooks", "environment.yml", "profiles"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, work / item)
    snakemake(work)
    return work


def test_pipeline_outputs(workflow_copy):
    cfg = yaml.safe_load((workflow_copy / "config/test.yaml").read_text())
    res = workflow_copy / cfg["results_dir"]
    scenarios = pd.read_csv(res / "tables/scenarios.csv")
    assert set(scenarios["scenario"]) == set(cfg["scenarios"])
    scenarios = scenarios[scenarios["scenario"] == "default"]
    assert set(scenarios["method"]) >= set(cfg["optimize"]["methods"])
    objective = scenarios.set_index("method")["objective_s"]
    assert objective["ao"] == pytest.approx(objective["global"], rel=1e-6)
    assert objective["exhaustive"] == pytest.approx(objective["global"], rel=1e-6)
    sweep = pd.read_csv(res / "tables/sweep_devices.csv")
    assert sorted(sweep["value"].unique().tolist()) == [3, 6]
    for method in cfg["train"]["methods"]:
        metrics = pd.read_csv(res / f"train/{method}/seed0/metrics.csv")
        assert len(metrics) == cfg["train"]["rounds"]
        assert metrics["sim_time_s"].is_monotonic_increasing
        summary = json.loads((res / f"train/{method}/seed0/summary.json").read_text())
        assert summary
    assert (workflow_copy / cfg["logs_dir"] / "optimize/default/ao.log").exists()
    for name in ("latency", "training", "profile"):
        assert (res / f"notebooks/{name}.html").stat().st_size > 0
        assert list((res / f"figures/{name}").glob("*.png")) and list((res / f"figures/{name}").glob("*.pdf"))


def cfg_sweeps(workflow_copy) -> dict:
    return yaml.safe_load((workflow_copy / "config/test.yaml").read_text())["sweeps"]


def test_issue_10_outputs(workflow_copy):
    """Server-sharing sweep, the rounds table of the per-round fading scenario, SFL-V2 trained on its own clock."""
    cfg = yaml.safe_load((workflow_copy / "config/test.yaml").read_text())
    res = workflow_copy / cfg["results_dir"]
    sharing = pd.read_csv(res / "tables/sweep_sharing.csv").pivot_table(index="method", columns="value",
                                                                       values="objective_s")
    assert (sharing["optimized"] <= sharing["equal"] * (1 + 1e-9)).loc[["ao", "global", "exhaustive"]].all()
    rounds = pd.read_csv(res / "tables/rounds_per-round.csv")
    assert set(rounds["policy"]) == {"static", "static_first", "per_round"}
    timed = [m for m in cfg["optimize"]["methods"] if m not in ("sfl_v2", "sfl_v2_common")]  # SFL-V2: not per round
    assert set(rounds["method"]) == set(timed)
    assert len(rounds) == 3 * len(timed) * cfg["train"]["rounds"]
    sweep = pd.read_csv(res / "tables/sweep_sharing.csv")
    assert {"sfl_v2", "sfl_v2_common"} <= set(sweep["method"])  # SFL-V2's own round in the sweep tables
    v2 = json.loads((res / "solutions/default/sfl_v2.json").read_text())
    assert v2["latency_model"] == "sfl_v2" and len(v2["round_latency_s"]) == cfg["train"]["rounds"]
    metrics = pd.read_csv(res / "train/sfl_v2/seed0/metrics.csv")
    assert metrics["round_latency_s"].tolist() == pytest.approx(v2["round_latency_s"], rel=1e-12)


def test_second_run_has_nothing_to_do(workflow_copy):
    assert planned_jobs(snakemake(workflow_copy, "-n")) == {}


def test_a_second_configuration_has_its_own_results(workflow_copy):
    cfg = yaml.safe_load((workflow_copy / "config/test.yaml").read_text())
    cfg["results_dir"], cfg["logs_dir"] = "results/other", "logs/other"
    (workflow_copy / "other.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(workflow_copy, "-n", "optimize_all", config="other.yaml"))
    n_scenarios = len(cfg["scenarios"]) + sum(len(s["values"]) for s in cfg["sweeps"].values())
    assert jobs["profile"] == 1 and jobs["scenario"] == n_scenarios and jobs["problem"] == n_scenarios
    proc = snakemake(workflow_copy, "-n", "--printshellcmds", "optimize_all", config="other.yaml")
    written = [line.split(":", 1)[1] for line in proc.stdout.splitlines() if line.strip().startswith("output:")]
    assert written and all(path.strip().startswith("results/other/") for w in written for path in w.split(","))
    assert planned_jobs(snakemake(workflow_copy, "-n")) == {}  # the test config's results are untouched


def test_a_bad_stage_input_fails_the_rule_with_its_message(workflow_copy):
    cfg = yaml.safe_load((workflow_copy / "config/test.yaml").read_text())
    root = Path(cfg["results_dir"])
    bad = workflow_copy / root / "scenarios/bogus.json"
    bad.write_text("[1, 2]")
    try:
        target = str(root / "problems/bogus.json")
        proc = snakemake(workflow_copy, target, "--allowed-rules", "problem", check=False)
    finally:
        bad.unlink()
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"hetsfl: error: scenario file {root}/scenarios/bogus.json holds a JSON list" in out
    assert "Traceback" not in out
    assert not (workflow_copy / target).exists()


def test_changing_one_scenario_parameter_reruns_only_its_dependents(workflow_copy):
    cfg = yaml.safe_load((workflow_copy / "config/test.yaml").read_text())
    cfg["sweeps"]["devices"]["values"] = [3, 7]
    (workflow_copy / "changed.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(workflow_copy, "-n", config="changed.yaml"))
    n_methods = len(cfg["optimize"]["methods"])
    assert jobs == {"scenario": 1, "problem": 1, "optimize": n_methods, "sweep_table": 1, "notebook": 1, "all": 1}


def test_changing_training_settings_does_not_rerun_optimisation(workflow_copy):
    cfg = yaml.safe_load((workflow_copy / "config/test.yaml").read_text())
    cfg["train"]["lr"] = 0.01
    (workflow_copy / "changed.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(workflow_copy, "-n", config="changed.yaml"))
    # the emulate stage runs the methods with train's learning rate and partition: it and the latency
    # notebook that reads its table rerun too
    emulate = {"emulate": 1, "notebook": 2} if cfg.get("emulate") else {"notebook": 1}
    assert jobs == {"train": len(cfg["train"]["methods"]), **emulate, "all": 1}


def test_code_change_reruns_the_stages_that_import_it(workflow_copy):
    # Snakemake compares the content of small inputs, not just their time: edit, do not touch.
    summary = workflow_copy / "src/hetsfl/optim/tables.py"
    summary.write_text(summary.read_text() + "\n# edited\n")  # only the table rules import it
    jobs = planned_jobs(snakemake(workflow_copy, "-n"))
    assert jobs == {"scenario_table": 1, "sweep_table": len(cfg_sweeps(workflow_copy)), "notebook": 1,
                    "all": 1}  # latency notebook
    solvers = workflow_copy / "src/hetsfl/optim/solvers.py"
    solvers.write_text(solvers.read_text() + "\n# edited\n")
    jobs = planned_jobs(snakemake(workflow_copy, "-n"))
    assert jobs["optimize"] > 0 and "profile" not in jobs and "scenario" not in jobs


def test_bad_config_is_a_clear_error(workflow_copy):
    cfg = yaml.safe_load((workflow_copy / "config/test.yaml").read_text())
    cfg["physical"]["fading"] = "nakagami"
    (workflow_copy / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(workflow_copy, "-n", config="bad.yaml", check=False)
    assert proc.returncode != 0
    assert "fading" in proc.stdout + proc.stderr

