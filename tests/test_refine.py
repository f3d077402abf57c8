"""The measured-time compute refinement (hetsfl.optim.refine): FLOPs from the profile's times."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hetsfl.errors import ConfigError
from hetsfl.optim.problem import Problem
from hetsfl.optim.refine import measured_compute_problem
from hetsfl.optim.solvers import solve


def _doc_and_profile(random_problem_document):
    doc = random_problem_document(np.random.default_rng(5), 4, 5)
    names = [layer["name"] for layer in doc["layers"]]
    rng = np.random.default_rng(0)
    prof = {"units": [{"name": n, "time_fwd_s": float(t), "time_bwd_s": float(2 * t)}
                      for n, t in zip(names, rng.uniform(1e-5, 1e-3, len(names)), strict=True)]}
    return doc, prof


def test_compute_term_is_k_d_times_measured_time_over_device_speed(random_problem_document):
    doc, prof = _doc_and_profile(random_problem_document)
    host = 5e10
    refined = measured_compute_problem(doc, prof, host)
    assert doc["layers"][0]["fwd_flops"] != refined["layers"][0]["fwd_flops"]  # the input is not changed
    p = Problem.from_dict(refined)
    a, _ = p.device_server_terms()
    t = np.cumsum([u["time_fwd_s"] + u["time_bwd_s"] for u in prof["units"]])
    K, D, c = p.iters, p.batch, p.dev_flops
    # device n at cut s: K D sum_{j<=s} t_j H / c_n
    np.testing.assert_allclose(a, (K * D / c)[:, None] * host * t[None, :], rtol=1e-9)
    assert refined["meta"]["compute_model"] == "measured"
    sol = solve(p, "ao")  # every solver takes it unchanged
    assert sol["status"] == "feasible" and sol["objective_s"] > 0
    json.dumps(refined)


def test_refusals_name_the_problem(random_problem_document):
    doc, prof = _doc_and_profile(random_problem_document)
    with pytest.raises(ConfigError, match="host_flops"):
        measured_compute_problem(doc, prof, 0.0)
    prof["units"][0]["time_fwd_s"] = float("nan")
    with pytest.raises(ConfigError, match="time_fwd_s"):
        measured_compute_problem(doc, prof, 1e10)
    prof["units"] = prof["units"][1:]
    with pytest.raises(ConfigError, match="no unit"):
        measured_compute_problem(doc, prof, 1e10)
