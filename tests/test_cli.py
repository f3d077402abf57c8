"""The `hetsfl` command line runs the stage functions; stage functions take explicit keyword arguments."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from hetsfl.cli import main
from hetsfl.config import load_config, scenario_spec
from hetsfl.stages import optimize, problem, profile, scenario, settings, tables, train

REPO = Path(__file__).resolve().parents[1]
STAGES = [scenario.stage_scenario, profile.stage_profile, problem.stage_problem, optimize.stage_optimize,
          tables.stage_sweep_table, train.stage_train]


@pytest.mark.parametrize("stage", STAGES, ids=[s.__name__ for s in STAGES])
def test_stages_take_keyword_arguments_and_no_config(stage):
    params = inspect.signature(stage).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    assert not {"cfg", "config"} & {p.name for p in params}


@pytest.mark.parametrize("make", [settings.profile_settings, settings.problem_settings, settings.optimize_settings,
                                  settings.train_settings])
def test_settings_are_stage_arguments(make):
    stage = {settings.profile_settings: profile.stage_profile, settings.problem_settings: problem.stage_problem,
             settings.optimize_settings: optimize.stage_optimize, settings.train_settings: train.stage_train}[make]
    for name in ("config", "paper", "test"):
        cfg = load_config(REPO / f"config/{name}.yaml")
        for kwargs in [make(cfg)] + ([make(cfg, m) for m in ("ao", "sfl_v2")] if make is settings.optimize_settings
                                     else []):
            assert set(kwargs) <= set(inspect.signature(stage).parameters)


def test_optimize_prints_one_line_and_writes_every_device(tmp_path, random_problem_document, capsys):
    doc = random_problem_document(np.random.default_rng(3), 300, 6)
    src, out = tmp_path / "p.json", tmp_path / "s.json"
    src.write_text(json.dumps(doc))
    assert main(["optimize", "--problem", str(src), "--method", "global", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    solution = json.loads(out.read_text())
    assert len(solution["splits"]) == 300
    line = lines[0]
    assert line.startswith("global:") and f"{solution['objective_s']:.6g}" in line and "solved in" in line
    counts = {int(k): int(v) for k, v in (p.split(": ") for p in line.split("{")[1].rstrip("}").split(", "))}
    assert counts == {s: solution["splits"].count(s) for s in set(solution["splits"])}


def test_cli_scenario_and_problem_are_the_stages(tmp_path):
    cfg_path = REPO / "config/test.yaml"
    cfg = load_config(cfg_path)
    assert main(["scenario", "--config", str(cfg_path), "--name", "devices_1", "--out", str(tmp_path / "a.json")]) == 0
    scenario.stage_scenario(spec=scenario_spec(cfg, "devices_1"), seed=cfg["seed"], name="devices_1",
                            out=tmp_path / "b.json")
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a == b and a["name"] == "devices_1"
