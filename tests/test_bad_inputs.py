"""Table-driven: every file in tests/bad_inputs/ must give exit status != 0, one line on stderr that contains
the expected fragment (a `# expect:` first line in a config, the NAME.expect file beside a problem), no
traceback, and nothing at the output path (not even a temporary file).

Add a case by adding a file; problem files are written by tests/bad_inputs/make_problems.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hetsfl.config import load_config
from hetsfl.errors import ConfigError

HERE = Path(__file__).parent
CORPUS = HERE / "bad_inputs"
REPO = HERE.parent
CONFIGS = sorted((CORPUS / "config").glob("*.yaml"))
PROBLEMS = sorted((CORPUS / "problem").glob("*.json"))
BIN = Path(sys.executable).parent


def expected_config_fragment(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} lacks its '# expect: ' first line"
    return first.removeprefix("# expect: ")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "hetsfl.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hetsfl: error: "), lines[0]
    assert fragment in lines[0], f"expected {fragment!r} in {lines[0]!r}"
    return lines[0]


def test_the_corpus_is_there():
    assert len(CONFIGS) >= 20 and len(PROBLEMS) >= 40
    assert all(p.with_suffix(".expect").is_file() for p in PROBLEMS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_bad_config_load_config(path):
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message and expected_config_fragment(path) in message


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_bad_config_check_config(path):
    assert_one_line_error(run("check-config", str(path)), expected_config_fragment(path))


@pytest.mark.parametrize("path", PROBLEMS, ids=lambda p: p.stem)
def test_bad_problem_optimize(path, tmp_path):
    out = tmp_path / "out" / "solution.json"
    fragment = path.with_suffix(".expect").read_text().strip()
    assert_one_line_error(run("optimize", "--problem", str(path), "--method", "ao", "--out", str(out)), fragment)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary file either


# Files Snakemake's own config loader rejects before it reads the workflow (so before the project's validator
# can run): its message is short and clear, and no traceback.
SNAKEMAKE_OWN = {
    "invalid_yaml": "Config file is not valid JSON or YAML",
    "not_a_mapping": "Config file must be given as JSON or YAML with keys at top level",
}


@pytest.mark.slow
def test_bad_configs_through_snakemake(tmp_path):
    """`snakemake -n` on every bad config: exit != 0 and the project's one-line message first (no schema dump).
    One workflow copy, one dry run per config."""
    for item in ("Snakefile", "workflow", "config", "src", "environment.yml", "profiles", "notebooks"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, tmp_path / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, tmp_path / item)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(tmp_path / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    failures = []
    for path in CONFIGS:
        proc = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", str(path)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        text = proc.stdout + proc.stderr
        errors = [line for line in text.splitlines() if "error" in line.lower()]
        if path.stem in SNAKEMAKE_OWN:
            ok = proc.returncode != 0 and "Traceback" not in text and SNAKEMAKE_OWN[path.stem] in text
        else:
            fragment = expected_config_fragment(path)
            ok = (proc.returncode != 0 and "Traceback" not in text and errors
                  and errors[0].startswith("hetsfl: error: ") and fragment in errors[0])
        ok = ok and len([line for line in text.splitlines() if line.strip()]) <= 4
        if not ok:
            failures.append(f"{path.name}: rc={proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
