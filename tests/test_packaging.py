"""environment.yml and pyproject.toml pin the same packages; the CLI and schemas ship with the package."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_ONLY = {"python", "pip"}


def _name(spec: str) -> str:
    return re.split(r"[=<>!~ \[]", spec, maxsplit=1)[0].strip().lower()


def _pins(specs, sep) -> dict[str, str]:
    out = {}
    for spec in specs:
        name = _name(spec)
        out[name] = spec.split(sep, 1)[1].strip() if sep in spec else ""
    return out


def test_environment_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    py = _pins(project["dependencies"] + project["optional-dependencies"]["dev"], "==")
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.update(_pins([d for d in dep["pip"] if not d.startswith("-e")], "=="))
        else:
            conda.update(_pins([dep], "="))
    both = {**conda, **pip}
    for name in CONDA_ONLY:
        both.pop(name, None)
    assert both == py, f"environment.yml and pyproject.toml differ: {set(both.items()) ^ set(py.items())}"
    assert py["torch"] == "2.14.1" and py["torchvision"] == "0.29.1"


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci/run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in ci and "make test" in readme


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "hetsfl.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("scenario", "profile", "problem", "optimize", "train", "check-config"):
        assert command in out.stdout


def test_cli_check_config_reports_a_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nphysical:\n  num_devices: 0\n")
    out = subprocess.run([sys.executable, "-m", "hetsfl.cli", "check-config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "physical.num_devices" in out.stderr


def test_every_config_validates():
    from hetsfl.config import load_config

    for path in sorted((REPO / "config").glob("*.yaml")):
        load_config(path)


def test_deps_follow_imports(tmp_path):
    from hetsfl.deps import module_sources

    files = module_sources("hetsfl.stages.optimize", REPO / "src")
    names = {Path(f).name for f in files}
    assert {"optimize.py", "solvers.py", "bandwidth.py", "problem.py", "latency.py"} <= names
    assert "engine.py" not in names and "profiling.py" not in names
