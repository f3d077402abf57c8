"""``python -m hetsfl.runtime rank|launch ...``: run one rank, or launch a whole run on this machine.

    python -m hetsfl.runtime rank --run-dir DIR [--rank R --world-size W --master-addr A --master-port P]
    python -m hetsfl.runtime launch --run-dir DIR [--master-port P] [--timeout S]

``rank`` takes what it is not given from the environment (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT as set by
torchrun, or SLURM_PROCID/SLURM_NTASKS/SLURM_STEP_NODELIST under srun). The run directory is written by
:func:`hetsfl.runtime.write_run`. Exit code 0 on success, 1 on an error (written to the rank's log).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from hetsfl.errors import HetsflError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hetsfl.runtime", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rank", help="run one rank (server = rank 0, device n = rank n + 1)")
    r.add_argument("--run-dir", required=True)
    r.add_argument("--rank", type=int)
    r.add_argument("--world-size", type=int)
    r.add_argument("--master-addr")
    r.add_argument("--master-port", type=int)
    r.add_argument("--no-progress", action="store_true", help="no progress bar on the server")
    r.add_argument("--verbose", action="store_true", help="INFO log lines on stderr too")
    la = sub.add_parser("launch", help="run server and devices as processes on this machine (loopback)")
    la.add_argument("--run-dir", required=True)
    la.add_argument("--master-port", type=int)
    la.add_argument("--timeout", type=float, help="kill the run after this many seconds")
    return p


def _write_error(run_dir: str, rank: int | None, exc: BaseException) -> None:
    """Leave the error for the launcher (it picks the rank that caused a failure, not its casualties)."""
    if rank is None:
        return
    import json
    import socket
    import time

    from hetsfl.io import write_json
    from hetsfl.runtime.errors import CommError
    from hetsfl.runtime.rank import rank_error_path

    doc = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
           "secondary": bool(isinstance(exc, CommError) and exc.peer_failed), "error": type(exc).__name__,
           "message": str(exc)}
    try:
        write_json(rank_error_path(run_dir, rank), json.loads(json.dumps(doc)))
    except OSError:
        pass


def _rank(args: argparse.Namespace) -> int:
    from hetsfl.runtime.rank import run_rank
    from hetsfl.runtime.rendezvous import resolve_rendezvous

    rank = args.rank
    try:
        rdv = resolve_rendezvous(args.rank, args.world_size, args.master_addr, args.master_port)
        rank = rdv.rank
        run_rank(args.run_dir, rdv, progress=not args.no_progress, verbose=args.verbose)
        return 0
    except BaseException as exc:  # log everything, then leave without waiting for gloo's threads
        log = logging.getLogger("hetsfl.runtime")
        if isinstance(exc, HetsflError):
            log.error("%s", exc)
            log.info("traceback:\n%s", traceback.format_exc())
            print(f"error: {exc}", file=sys.stderr)
        elif isinstance(exc, KeyboardInterrupt):
            log.error("interrupted")
        else:
            log.error("unexpected error:\n%s", traceback.format_exc())
            traceback.print_exc()
        _write_error(args.run_dir, rank, exc)
        for handler in logging.getLogger("hetsfl").handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130 if isinstance(exc, KeyboardInterrupt) else 1)


def _launch(args: argparse.Namespace) -> int:
    from hetsfl.runtime.launch import launch_local

    try:
        result = launch_local(args.run_dir, master_port=args.master_port, timeout_s=args.timeout)
    except HetsflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: all ranks were stopped; launch again to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    print(f"done in {result.wall_s:.1f} s; outputs in {result.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _rank(args) if args.command == "rank" else _launch(args)


if __name__ == "__main__":
    sys.exit(main())
