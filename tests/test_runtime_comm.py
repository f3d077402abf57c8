"""Messages between two real ranks (gloo on loopback): known and unknown sizes arrive bit-exact with their
header's round and sequence number, timings are non-negative, and a wait that runs out names both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hetsfl.runtime.rendezvous import free_port

pytestmark = pytest.mark.slow

SCRIPT = r"""
import datetime, json, os, socket, sys, time
import torch, torch.distributed as dist
from hetsfl.runtime.comm import Kind, Link, PeerInfo
from hetsfl.runtime.errors import CommError
rank, port = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=30))
me, peer = PeerInfo(rank, socket.gethostname(), os.getpid()), PeerInfo(1 - rank, socket.gethostname(), 0)
link = Link(me, peer, timeout_s=30)
a = torch.arange(1000, dtype=torch.int64).view(torch.uint8)[:1000].clone()
b = (torch.arange(12345) % 251).to(torch.uint8)
if rank == 0:
    known = link.post(Kind.MODEL_UP, a.numel(), round_idx=3, seq=0)
    unknown = link.post(Kind.REPORT_UP, None, round_idx=3, seq=7)
    got_a, got_b = known.wait(), unknown.wait()
    out = {"a": torch.equal(got_a.payload, a), "b": torch.equal(got_b.payload, b),
           "sizes": [got_a.nbytes, got_b.nbytes], "ids": [got_b.round_idx, got_b.seq],
           "times": [got_a.wait_s, got_a.transfer_s, got_b.wait_s, got_b.transfer_s]}
    try:
        link.post(Kind.GRAD_DOWN, 8, round_idx=4).wait(timeout_s=1)
    except CommError as exc:
        out["timeout"] = str(exc)
    print(json.dumps(out), flush=True)
else:
    link.send(Kind.MODEL_UP, a, round_idx=3, seq=0)
    link.send(Kind.REPORT_UP, b, round_idx=3, seq=7)
    time.sleep(4)  # alive while rank 0 waits in vain
os._exit(0)  # a timed-out receive leaves the group unusable, as in the runtime (a timeout is fatal)
"""


def test_messages_between_two_ranks(tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(SCRIPT)
    port = str(free_port())
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo")
    procs = [subprocess.Popen([sys.executable, str(script), str(r), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    res = json.loads(outs[0][0].strip().splitlines()[-1])
    assert res["a"] and res["b"] and res["sizes"] == [1000, 12345] and res["ids"] == [3, 7]
    assert all(t >= 0 for t in res["times"])
    msg = res["timeout"]
    assert msg.startswith("rank 0 (server on host") and "receiving gradient (round 5, #0)" in msg
    assert "with rank 1 (device 0 on host" in msg and "timed out after 1 s" in msg
