"""Table-driven: every file in tests/bad_inputs/cli/ and tests/bad_inputs/stages/ is one bad input.

A case (YAML) runs either the `hetsfl` command line (`args:`) or a stage function (`stage:` module.function,
`kwargs:`). It must fail with a HetsflError / exit status 2, print one message without a traceback that
contains every string in `expect:`, and leave none of the `absent:` paths behind. Placeholders in strings:
{tmp} (a fresh directory), {repo}, and the valid inputs {config} (config/test.yaml), {scenario}, {profile},
{problem}, {solution_ao}, {solution_fixed_split}, {solution_fl}. Optional set-up:
- `files: {name: text}` writes {tmp}/name;
- `derive: {name: {from: <placeholder>, set: {dotted.path: value}, delete: [dotted.path], wrap: list}}`
  writes {tmp}/name as a JSON (or YAML, for .yaml) copy of a valid input with those edits;
- `dirs: [name]` makes directories under {tmp}.
"""

from __future__ import annotations

import copy
import importlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from hetsfl.errors import HetsflError

REPO = Path(__file__).resolve().parents[1]
CASES = sorted((REPO / "tests/bad_inputs/cli").glob("*.yaml")) + sorted((REPO / "tests/bad_inputs/stages").glob("*.yaml"))


@pytest.fixture(scope="module")
def valid_inputs(tmp_path_factory) -> dict[str, str]:
    """A scenario, a CNN profile, a problem and three solutions, made by the stages from config/test.yaml."""
    from hetsfl.config import load_config, scenario_spec
    from hetsfl.stages import settings
    from hetsfl.stages.optimize import stage_optimize
    from hetsfl.stages.problem import stage_problem
    from hetsfl.stages.profile import stage_profile
    from hetsfl.stages.scenario import stage_scenario

    d = tmp_path_factory.mktemp("valid")
    cfg = load_config(REPO / "config/test.yaml")
    files = {"config": str(REPO / "config/test.yaml"), "scenario": str(d / "scenario.json"),
             "profile": str(d / "profile.json"), "problem": str(d / "problem.json")}
    stage_scenario(spec=scenario_spec(cfg, "default"), seed=cfg["seed"], name="default", out=files["scenario"])
    prof = {**settings.profile_settings(cfg), "repeats": 1, "batch_size": 2}
    stage_profile(**prof, out_json=files["profile"], out_csv=d / "profile.csv")
    stage_problem(scenario_path=files["scenario"], profile_path=files["profile"], out=files["problem"])
    for method in ("ao", "fixed_split", "fl"):
        files[f"solution_{method}"] = str(d / f"{method}.json")
        stage_optimize(problem_path=files["problem"], method=method, out=files[f"solution_{method}"])
    return files


def _fill(value, names: dict[str, str]):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def _walk(doc, dotted: str):
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc, (int(last) if isinstance(doc, list) else last)


def _derive(spec: dict, names: dict[str, str], out: Path) -> None:
    src = Path(names[spec["from"]])
    doc = yaml.safe_load(src.read_text()) if src.suffix == ".yaml" else json.loads(src.read_text())
    doc = copy.deepcopy(doc)
    for dotted, value in (spec.get("set") or {}).items():
        parent, key = _walk(doc, dotted)
        parent[key] = value
    for dotted in spec.get("delete") or []:
        parent, key = _walk(doc, dotted)
        del parent[key]
    if spec.get("wrap") == "list":
        doc = [doc]
    out.write_text(yaml.safe_dump(doc) if out.suffix == ".yaml" else json.dumps(doc))


def _run_case(case: dict, names: dict[str, str], capsys) -> str:
    if "args" in case:
        from hetsfl.cli import main

        try:
            code = main([str(a) for a in _fill(case["args"], names)])
        except SystemExit as exc:  # argparse
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("hetsfl"), err
        return err
    module, function = case["stage"].rsplit(".", 1)
    stage = getattr(importlib.import_module(f"hetsfl.stages.{module}"), function)
    with pytest.raises(HetsflError) as exc:
        stage(**_fill(case["kwargs"], names))
    return str(exc.value)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_bad_input_is_a_clear_error(path, valid_inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # config/test.yaml's data_dir is relative
    case = yaml.safe_load(path.read_text())
    names = {**valid_inputs, "tmp": str(tmp_path), "repo": str(REPO)}
    for name in case.get("dirs") or []:
        (tmp_path / name).mkdir(parents=True)
    for name, text in (case.get("files") or {}).items():
        (tmp_path / name).write_text(text)
    for name, spec in (case.get("derive") or {}).items():
        _derive(spec, names, tmp_path / name)
    message = _run_case(case, names, capsys)
    assert "Traceback" not in message
    for needle in _fill(case["expect"], names):
        assert needle in message, f"{needle!r} not in {message!r}"
    for absent in _fill(case.get("absent") or [], names):
        assert not Path(absent).exists(), f"{absent} was left behind"
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert not leftovers, leftovers
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_there_are_cases():
    assert len(CASES) >= 20
