"""Run Snakemake workflows through a real single-node SLURM cluster with profiles/slurm.

The module fixture starts the cluster with ``scripts/slurm-cluster.sh start`` (which installs Debian's
slurmctld, slurmd, slurm-client and munge when they are missing) unless it is already running, and
stops it at teardown only if the tests started it (the last pytest process using it does). A cluster
that was running before is used and left running. Starting needs root; where the cluster is not
running and cannot be started (not root, or the packages are missing and there is no apt-get) the
tests are skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm"
# The virtual environment's bin directory: where this interpreter (and snakemake) live. Not resolved,
# since a venv's python is a symlink to the base interpreter.
VENV_BIN = Path(sys.executable).parent
STATE_DIR = Path(os.environ.get("HETSFL_SLURM_DIR", "/tmp/hetsfl-slurm"))
SLURM_CONF = STATE_DIR / "slurm.conf"
# Bookkeeping shared by the pytest processes that use the cluster. With pytest-xdist the tests of this
# module may run on different workers at once (`xdist_group` marks have no effect with pytest 9 and
# pytest-xdist 3.8), each with its own module fixture.
COORD_DIR = STATE_DIR.with_name(STATE_DIR.name + "-pytest")
STARTED_BY_TESTS = COORD_DIR / "started-by-tests"
DAEMONS = ("slurmctld", "slurmd", "sbatch", "squeue", "srun", "munged")
PIPELINE_SNAKEFILE = REPO / "Snakefile"
PIPELINE_CONFIG = REPO / "config" / "test.yaml"
SNAKEMAKE_TIMEOUT = 300  # seconds for the two-job workflow (it takes about a minute)
PIPELINE_TIMEOUT = 1800  # seconds for the pipeline on config/test.yaml

JOB_ID_RE = re.compile(r"^SLURM_JOB_ID=(.*)$", re.MULTILINE)

# Two chained rules, each writing the SLURM job id and the host it ran in to its output and log.
TEST_SNAKEFILE = textwrap.dedent(
    """\
    rule all:
        input:
            "results/second.txt",


    rule first_step:
        output:
            "results/first.txt",
        log:
            "logs/first_step.log",
        threads: 1
        resources:
            mem_mb=200,
            runtime=5,
        shell:
            'echo "SLURM_JOB_ID=${{SLURM_JOB_ID:-}}" > {output} && hostname >> {output}'
            ' && echo "first_step ran in SLURM job ${{SLURM_JOB_ID:-}}" > {log}'


    rule second_step:
        input:
            "results/first.txt",
        output:
            "results/second.txt",
        log:
            "logs/second_step.log",
        threads: 1
        resources:
            mem_mb=200,
            runtime=5,
        shell:
            'echo "SLURM_JOB_ID=${{SLURM_JOB_ID:-}}" > {output} && hostname >> {output}'
            ' && echo "second_step ran in SLURM job ${{SLURM_JOB_ID:-}}" > {log}'
    """
)


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def _cluster_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SLURM_CONF"] = str(SLURM_CONF)
    env["HETSFL_SLURM_DIR"] = str(STATE_DIR)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", ""), "/usr/sbin", "/sbin"])
    return env


def _run_script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command],
        env=_cluster_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def _coordination_lock():
    """Serialise cluster bookkeeping between pytest processes (xdist workers) on this machine."""
    COORD_DIR.mkdir(parents=True, exist_ok=True)
    (COORD_DIR / "users").mkdir(exist_ok=True)
    with open(COORD_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _live_users() -> list[Path]:
    """The registered users (one file per pytest process) whose process still exists."""
    live = []
    for path in (COORD_DIR / "users").iterdir():
        if path.name.isdigit() and Path(f"/proc/{path.name}").exists():
            live.append(path)
        else:
            path.unlink(missing_ok=True)  # left by a process that died
    return live


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node cluster; yields the environment that reaches it (SLURM_CONF, PATH).

    Each pytest process using the cluster registers itself. A cluster that was running before the
    tests is used and left running; one that the tests started is stopped by the last process to
    finish with it (test modules are not kept on one xdist worker, see COORD_DIR).
    """
    me = COORD_DIR / "users" / str(os.getpid())
    with _coordination_lock():
        status = _run_script("status", timeout=120)
        if status.returncode == 0:
            if not _live_users():
                STARTED_BY_TESTS.unlink(missing_ok=True)  # running, but not for a test session now
        else:
            installed = all(_which(d) for d in DAEMONS)
            if os.geteuid() != 0:
                pytest.skip(
                    "no SLURM cluster is running and starting one with scripts/slurm-cluster.sh needs root"
                    + ("" if installed else " (and the Debian slurm/munge packages are not installed)")
                )
            if not installed and _which("apt-get") is None:
                pytest.skip("the Debian slurm/munge packages are not installed and apt-get is not available")
            start = _run_script("start", timeout=900)
            if start.returncode != 0:
                pytest.fail(
                    f"scripts/slurm-cluster.sh start failed (exit {start.returncode}):\n"
                    f"{start.stdout}\n{start.stderr}"
                )
            STARTED_BY_TESTS.touch()
        me.touch()
    try:
        yield _cluster_env()
    finally:
        with _coordination_lock():
            me.unlink(missing_ok=True)
            if STARTED_BY_TESTS.exists() and not _live_users():
                stop = _run_script("stop", timeout=120)
                STARTED_BY_TESTS.unlink(missing_ok=True)
                assert stop.returncode == 0, (
                    f"scripts/slurm-cluster.sh stop failed:\n{stop.stdout}\n{stop.stderr}"
                )


def _snakemake(args: list[str], cwd: Path, env: dict[str, str], timeout: float):
    exe = VENV_BIN / "snakemake"
    cmd = [str(exe) if exe.exists() else "snakemake", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _slurm_logs(workdir: Path) -> list[Path]:
    return sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))


def _explain(proc: subprocess.CompletedProcess[str], workdir: Path) -> str:
    parts = [
        f"exit {proc.returncode}",
        "--- stdout ---",
        proc.stdout[-5000:],
        "--- stderr ---",
        proc.stderr[-8000:],
    ]
    for log in _slurm_logs(workdir)[-4:]:
        parts += [f"--- {log} ---", log.read_text(errors="replace")[-3000:]]
    return "\n".join(parts)


def _job_id(path: Path) -> str:
    match = JOB_ID_RE.search(path.read_text())
    assert match, f"{path} records no SLURM_JOB_ID line:\n{path.read_text()}"
    return match.group(1).strip()


def test_two_chained_rules_run_as_separate_slurm_jobs(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TEST_SNAKEFILE)
    proc = _snakemake(
        ["--profile", str(SLURM_PROFILE), "--directory", str(tmp_path)],
        cwd=tmp_path,
        env=slurm_cluster,
        timeout=SNAKEMAKE_TIMEOUT,
    )
    assert proc.returncode == 0, _explain(proc, tmp_path)

    first, second = tmp_path / "results" / "first.txt", tmp_path / "results" / "second.txt"
    ids = [_job_id(first), _job_id(second)]
    for path, job_id in zip((first, second), ids, strict=True):
        assert job_id.isdigit(), f"{path} has SLURM_JOB_ID={job_id!r}: the job did not run under SLURM"
        # The test cluster has one node: this machine.
        assert path.read_text().splitlines()[1].strip() == socket.gethostname(), path.read_text()
    assert ids[0] != ids[1], f"both rules ran in the same SLURM job {ids[0]}"

    for rule, job_id in zip(("first_step", "second_step"), ids, strict=True):
        log = tmp_path / "logs" / f"{rule}.log"
        assert log.read_text().strip() == f"{rule} ran in SLURM job {job_id}"
    # The profile keeps every job's SLURM log, named after the job id.
    log_names = {p.stem for p in _slurm_logs(tmp_path)}
    assert set(ids) <= log_names, f"SLURM logs {sorted(log_names)} do not cover jobs {ids}"


@pytest.mark.skipif(
    not (PIPELINE_SNAKEFILE.is_file() and PIPELINE_CONFIG.is_file()),
    reason="enabled once the pipeline's test config exists",
)
def test_pipeline_test_config_on_slurm(slurm_cluster, tmp_path):
    snakefile, configfile = PIPELINE_SNAKEFILE, PIPELINE_CONFIG
    proc = _snakemake(
        [
            "--profile",
            str(SLURM_PROFILE),
            "--configfile",
            str(configfile),
            "--snakefile",
            str(snakefile),
            "--directory",
            str(tmp_path),
        ],
        cwd=REPO,
        env=slurm_cluster,
        timeout=PIPELINE_TIMEOUT,
    )
    assert proc.returncode == 0, _explain(proc, tmp_path)

    results = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert results, "the pipeline wrote nothing under results/"
    # (.snakemake_timestamp marks a directory output: empty by design)
    empty = [str(p.relative_to(tmp_path)) for p in results if p.stat().st_size == 0 and p.name != ".snakemake_timestamp"]
    assert not empty, f"empty result files: {empty}"
    logs = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert logs, "the pipeline wrote no logs under logs/"
    # Jobs submitted to SLURM leave their SLURM log, named <job id>.log, in the work directory.
    slurm_logs = _slurm_logs(tmp_path)
    assert slurm_logs, "no SLURM job logs under .snakemake/slurm_logs: did any job run under SLURM?"
    assert all(p.stem.isdigit() for p in slurm_logs), [str(p) for p in slurm_logs]
    # The outputs themselves say which SLURM job wrote them (hetsfl.io.provenance).
    import json

    root = tmp_path / yaml.safe_load(Path(configfile).read_text())["results_dir"]
    profile_meta = json.loads(next((root / "profiles").glob("*.json")).read_text())["meta"]
    job_ids = {profile_meta["provenance"]["slurm_job_id"]}
    for prov in (root / "train").rglob("provenance.json"):
        job_ids.add(json.loads(prov.read_text())["slurm_job_id"])
    assert len(job_ids) >= 2 and all(j and j.isdigit() for j in job_ids), job_ids
    assert job_ids <= {p.stem for p in slurm_logs}, (job_ids, [p.stem for p in slurm_logs])


def test_runtime_as_one_srun_job_step(slurm_cluster, tmp_path):
    """The distributed runtime as one job step of N + 1 = 3 tasks inside an allocation (issue 11 §4): every
    rank takes rank, world size and master from SLURM's environment; the run ends with the in-process
    engine's model."""
    import numpy as np
    import torch
    from _data import fashion_subset

    from hetsfl.runtime import RunOptions, write_run
    from hetsfl.train import TrainSpec, run_training

    train, test = fashion_subset(400, 100)
    perm = np.random.default_rng(1).permutation(len(train))
    parts = [np.sort(p) for p in np.split(perm, [180])]
    spec = TrainSpec(method="sfl", model="cnn", splits=[2, 4], rounds=2, local_iters=[2, 3], batch_sizes=[8, 16],
                     lr=0.05, momentum=0.9, weight_decay=5e-4, seed=3, bits_per_activation=32,
                     bits_per_param=32)
    run_dir = tmp_path / "run"
    write_run(run_dir, spec, train, test, parts, RunOptions(timeout_s=120))
    env = dict(slurm_cluster, GLOO_SOCKET_IFNAME="lo", PYTHONPATH=str(REPO / "src"))
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    # --overcommit: the test node may have fewer CPUs than tasks
    cmd = ["salloc", "--ntasks", "3", "--overcommit", "--time", "10", "--",
           "srun", "--ntasks", "3", "--overcommit", "--output", str(run_dir / "logs" / "srun-%t.out"),
           sys.executable, "-m", "hetsfl.runtime", "rank", "--run-dir", str(run_dir)]
    (run_dir / "logs").mkdir(exist_ok=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    outs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted((run_dir / "logs").glob("srun-*.out")))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{outs}"
    for rank in range(3):
        log = (run_dir / "logs" / f"rank{rank}.log").read_text()
        assert f"as rank {rank} of 3" in log and "(from slurm)" in log, log[-2000:]
    run_training(spec, train, test, parts, tmp_path / "engine", progress=False)
    a = torch.load(tmp_path / "engine" / "final_model.pt", weights_only=True)
    b = torch.load(run_dir / "final_model.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=f"{key} differs")
