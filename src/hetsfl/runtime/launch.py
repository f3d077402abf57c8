"""Start a run's server and devices as processes on this machine, watch them, and report.

Every rank is a ``subprocess`` (not ``multiprocessing``), so each can be wrapped by a command prefix (for
example ``["ip", "netns", "exec", "dev3"]``), get its own environment additions (``GLOO_SOCKET_IFNAME``, a
``MASTER_ADDR`` inside an emulated network) and be handed to a callback right after it started (to move its
pid into a cgroup). When a rank exits with an error or is killed, the launcher stops the others and raises
:class:`LaunchError` naming the rank that failed first, its exit code and the tail of its log.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import hetsfl
from hetsfl.runtime.errors import LaunchError
from hetsfl.runtime.rank import rank_error_path, rank_log_path
from hetsfl.runtime.rendezvous import free_port
from hetsfl.runtime.runfile import RunOptions, log_dir, read_run, write_run
from hetsfl.train import TrainSpec

if TYPE_CHECKING:
    from hetsfl.data.datasets import ImageDataset

__all__ = ["LaunchResult", "PerRank", "launch_local", "rank_command", "run_distributed"]

#: A per-rank value: one mapping rank -> value (missing ranks get nothing), or a function of the rank.
PerRank = Mapping[int, object] | Callable[[int], object] | None

_TAIL_LINES = 25


@dataclass(frozen=True)
class LaunchResult:
    """A finished run: its directory, every rank's exit code (all 0), wall time and log files."""

    run_dir: Path
    returncodes: list[int]
    wall_s: float
    logs: list[Path]
    outputs: list[Path]


def _per_rank(value: PerRank, rank: int) -> Any:
    if value is None:
        return None
    if callable(value):
        return value(rank)
    return value.get(rank)


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return addr == "localhost"


def rank_command(run_dir: Path, rank: int, world_size: int, master_addr: str, master_port: int,
                 python: str | None = None, progress: bool = False) -> list[str]:
    """The command line of one rank (without prefix)."""
    cmd = [python or sys.executable, "-m", "hetsfl.runtime", "rank", "--run-dir", str(run_dir),
           "--rank", str(rank), "--world-size", str(world_size),
           "--master-addr", master_addr, "--master-port", str(master_port)]
    if not progress:
        cmd.append("--no-progress")
    return cmd


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"    (no log at {path})"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty)"


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the rank gets SIGTERM if the launcher dies (kept across exec, e.g. through ip netns exec)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(procs: dict[int, subprocess.Popen], grace_s: float = 3.0) -> None:
    """SIGTERM every still-running rank's process group (each rank has its own session), then SIGKILL."""
    alive = {r: p for r, p in procs.items() if p.poll() is None}
    for p in alive.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in alive.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in alive.values():
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def launch_local(
    run_dir: str | os.PathLike,
    *,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    prefixes: PerRank = None,
    env: PerRank = None,
    on_spawn: Callable[[int, subprocess.Popen], None] | None = None,
    python: str | None = None,
    timeout_s: float | None = None,
    progress: bool = True,
    poll_s: float = 0.05,
) -> LaunchResult:
    """Run the written run in ``run_dir`` (see write_run) as 1 + N processes on this machine; wait for them.

    prefixes: per rank, a command prefix (a list of strings) put before ``python -m hetsfl.runtime rank``.
    env: per rank, environment variables added to the launcher's environment (after MASTER_ADDR etc., so
      they can override them). ``GLOO_SOCKET_IFNAME`` defaults to ``lo`` when ``master_addr`` is a
      loopback address and nothing else sets it.
    on_spawn: called as ``on_spawn(rank, popen)`` right after each rank started (if it raises, the run is
      stopped and the error passes through).
    master_port: default a free port on this machine. timeout_s: stop the run after that many seconds.

    Each rank's stdout and stderr go to ``logs/rank<r>.out``; each rank also writes ``logs/rank<r>.log``.
    Raises LaunchError if a rank fails (the others are stopped first); KeyboardInterrupt stops all ranks.
    """
    run = read_run(run_dir)
    run_dir = Path(run_dir).resolve()
    world = run.world_size
    port = int(master_port) if master_port is not None else free_port()
    logs = log_dir(run_dir)
    _clear_previous(run_dir, world)
    base_env = _base_env(master_addr, port, world)
    host = socket.gethostname()
    procs: dict[int, subprocess.Popen] = {}
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:  # closes the progress bar, then the log files
        try:
            for rank in range(world):
                child_env = _rank_env(base_env, rank, _per_rank(env, rank))
                cmd = _rank_argv(run_dir, rank, world, child_env, _per_rank(prefixes, rank), python)
                out = stack.enter_context(open(logs / f"rank{rank}.out", "w"))
                procs[rank] = _start_rank(rank, cmd, child_env, run_dir, out)
                if on_spawn is not None:
                    on_spawn(rank, procs[rank])
            bar = stack.enter_context(tqdm(total=run.spec.rounds, desc=f"{run.spec.method} ({world - 1} devices)",
                                           unit="round", disable=None if progress else True))
            failed = _supervise(procs, bar, run_dir, t0, timeout_s, poll_s)
            if failed:
                raise _failure(procs, failed, run_dir, host)
        except BaseException:
            _stop(procs)
            raise
    return LaunchResult(run_dir, [p.returncode for p in procs.values()], time.perf_counter() - t0,
                        [logs / f"rank{r}.log" for r in range(world)], _outputs(run_dir))


def _clear_previous(run_dir: Path, world: int) -> None:
    """Make the log directory; remove the error files and progress of an earlier launch of this run."""
    log_dir(run_dir).mkdir(parents=True, exist_ok=True)
    for rank in range(world):
        rank_error_path(run_dir, rank).unlink(missing_ok=True)
    (run_dir / "progress.json").unlink(missing_ok=True)


def _base_env(master_addr: str, port: int, world: int) -> dict[str, str]:
    """The launcher's environment, with this hetsfl first on PYTHONPATH and the env:// rendezvous."""
    src_dir = str(Path(hetsfl.__file__).resolve().parent.parent)
    base_env = dict(os.environ)
    base_env["PYTHONPATH"] = os.pathsep.join([src_dir] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    base_env.update(MASTER_ADDR=master_addr, MASTER_PORT=str(port), WORLD_SIZE=str(world))
    return base_env


def _rank_env(base_env: Mapping[str, str], rank: int, extra: Mapping[object, object] | None) -> dict[str, str]:
    """base_env + RANK + the rank's own additions; GLOO_SOCKET_IFNAME=lo for a loopback master by default."""
    added = {str(k): str(v) for k, v in (extra or {}).items()}
    child_env = dict(base_env, RANK=str(rank), **added)
    if "GLOO_SOCKET_IFNAME" not in added and _is_loopback(child_env["MASTER_ADDR"]):
        child_env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return child_env


def _rank_argv(run_dir: Path, rank: int, world: int, child_env: Mapping[str, str],
               prefix: Sequence[object] | None, python: str | None) -> list[str]:
    """The rank's prefix (if any) followed by its rank_command, at the master its environment names."""
    cmd = [str(c) for c in (prefix or [])]
    return cmd + rank_command(run_dir, rank, world, child_env["MASTER_ADDR"], int(child_env["MASTER_PORT"]),
                              python)


def _start_rank(rank: int, cmd: list[str], child_env: dict[str, str], run_dir: Path, out: IO) -> subprocess.Popen:
    """Start one rank in its own session, output to ``out``; LaunchError if it cannot start."""
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=child_env, cwd=run_dir, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    except OSError as exc:
        raise LaunchError(f"cannot start rank {rank} ({' '.join(cmd[:4])} ...): {exc}") from exc


def _collect_failures(procs: dict[int, subprocess.Popen], failed: list[tuple[int, int]]) -> None:
    """Append (rank, exit code) of every rank that has exited with an error and is not in failed yet."""
    for rank, p in procs.items():
        code = p.poll()
        if code not in (None, 0) and rank not in [r for r, _ in failed]:
            failed.append((rank, code))


def _supervise(procs: dict[int, subprocess.Popen], bar: Any, run_dir: Path, t0: float, timeout_s: float | None,
               poll_s: float) -> list[tuple[int, int]]:
    """Poll the ranks (and show progress) until one fails or all finish; return the failures (rank, code).

    Stops the run and raises LaunchError when ``timeout_s`` (counted from ``t0``) passes first.
    """
    progress_path = run_dir / "progress.json"
    shown = 0
    failed: list[tuple[int, int]] = []
    while True:
        _collect_failures(procs, failed)
        if failed:
            return failed
        if all(p.poll() == 0 for p in procs.values()):
            _update_bar(bar, progress_path, shown)
            return failed
        if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
            _stop(procs)
            raise LaunchError(
                f"the run in {run_dir} did not finish within {timeout_s:g} s and was stopped; "
                f"see {log_dir(run_dir)}"
            )
        shown = _update_bar(bar, progress_path, shown)
        time.sleep(poll_s)


def _outputs(run_dir: Path) -> list[Path]:
    """The result files the run wrote."""
    names = ("metrics.csv", "measured_devices.csv", "measured_rounds.csv", "final_model.pt", "summary.json")
    return [run_dir / name for name in names if (run_dir / name).exists()]


def _read_error(run_dir: Path, rank: int) -> dict:
    try:
        return json.loads(rank_error_path(run_dir, rank).read_text())
    except (OSError, ValueError):
        return {}


def _failure(procs: dict[int, subprocess.Popen], failed: list[tuple[int, int]], run_dir: Path, host: str,
             settle_s: float = 1.0) -> LaunchError:
    """Stop the run and name the rank that caused the failure, with its exit and the tail of its log.

    Waits ``settle_s`` for other ranks to fail too (they write their errors), then picks: a rank killed by a
    signal, else one whose error is its own (not "the peer closed the connection"), else the earliest.
    """
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
        _collect_failures(procs, failed)
        time.sleep(0.05)
    _stop(procs)
    errors = {rank: _read_error(run_dir, rank) for rank in procs}
    rank, code = _first_cause(failed, errors)
    return LaunchError(_failure_message(procs, errors, rank, code, run_dir, host))


def _first_cause(failed: list[tuple[int, int]], errors: Mapping[int, dict]) -> tuple[int, int]:
    """The (rank, code) that caused the failure: killed by a signal, else own error, else earliest."""

    def cause_first(item: tuple[int, tuple[int, int]]) -> tuple:
        order, (rank, code) = item
        err = errors[rank]
        return (code >= 0, bool(err.get("secondary", False)), err.get("time", float("inf")), order)

    return sorted(enumerate(failed), key=cause_first)[0][1]


def _failure_message(procs: dict[int, subprocess.Popen], errors: Mapping[int, dict], rank: int, code: int,
                     run_dir: Path, host: str) -> str:
    """Who failed and how, what became of the other ranks, and the tails of the failed rank's log and output."""
    role = "server" if rank == 0 else f"device {rank - 1}"
    logs = log_dir(run_dir)
    others = "; ".join(
        f"rank {r}: {_describe_exit(p.returncode)}"
        + (f" ({errors[r]['message'].splitlines()[0][:200]})" if errors.get(r, {}).get("message") else "")
        for r, p in procs.items() if r != rank
    )
    own = errors[rank].get("message")
    return (
        f"rank {rank} ({role} on host {errors[rank].get('host', host)}, pid {procs[rank].pid}) failed: "
        f"{_describe_exit(code)}" + (f": {own}" if own else "") + f"\nThe other ranks were stopped: {others}.\n"
        f"Last lines of its log {rank_log_path(run_dir, rank)}:\n{_tail(rank_log_path(run_dir, rank), 8)}\n"
        f"Last lines of its output {logs / f'rank{rank}.out'}:\n{_tail(logs / f'rank{rank}.out')}"
    )


def _update_bar(bar: Any, path: Path, shown: int) -> int:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return shown
    done = int(doc.get("round", 0))
    if done > shown:
        bar.update(done - shown)
        bar.set_postfix(acc=f"{doc.get('test_acc', float('nan')):.4f}")
    return max(done, shown)


def run_distributed(
    spec: TrainSpec,
    train: ImageDataset,
    test: ImageDataset,
    parts: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    options: RunOptions | None = None,
    **launch_kwargs: Any,
) -> pd.DataFrame:
    """Like hetsfl.train.run_training, but as 1 + N processes (write_run, then launch_local).

    Returns the metrics (metrics.csv; all rounds done so far if ``options.stop_after_round`` stopped it).
    """
    write_run(out_dir, spec, train, test, parts, options)
    launch_local(out_dir, **launch_kwargs)
    path = Path(out_dir) / "metrics.csv"
    if path.exists():
        return pd.read_csv(path)
    from hetsfl.runtime.records import METRICS_COLUMNS, read_checkpoint

    ckpt = read_checkpoint(Path(out_dir) / "checkpoint.pt")
    return pd.DataFrame(ckpt["metrics"] if ckpt else [], columns=METRICS_COLUMNS)
