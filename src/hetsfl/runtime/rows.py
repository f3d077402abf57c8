"""The rows a distributed run's server appends each round (metrics, measured devices, measured rounds) and
its summary: pure functions from what the round measured to the dictionaries of hetsfl.runtime.records."""

from __future__ import annotations

import math

import torch

from hetsfl.runtime.serving import DeviceRecord
from hetsfl.train.spec import TrainSpec

__all__ = ["device_rows", "metrics_row", "round_row", "summary"]


def metrics_row(
    spec: TrainSpec, model_bits: list[float], prev: dict | None, r: int, train_loss: float, test_acc: float,
    test_loss: float
) -> dict:
    """Round r's row of metrics.csv (the engine's columns); ``prev`` is the row before (None at round 1)."""
    if prev is None:
        prev = {"sim_time_s": 0.0, "cum_bits_up": 0.0, "cum_bits_down": 0.0}
    up_total = down_total = float(sum(model_bits))
    if spec.bits_up is not None:
        up_total = float(sum(spec.bits_up))
    if spec.bits_down is not None:
        down_total = float(sum(spec.bits_down))
    return {
        "round": r + 1,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "train_loss": train_loss,
        "round_latency_s": spec.round_latency_s,
        "sim_time_s": prev["sim_time_s"] + spec.round_latency_s,
        "bits_up_total": up_total,
        "bits_down_total": down_total,
        "cum_bits_up": prev["cum_bits_up"] + up_total,
        "cum_bits_down": prev["cum_bits_down"] + down_total,
    }


def device_rows(spec: TrainSpec, hosts: list[str], r: int, records: list[DeviceRecord]) -> list[dict]:
    """Round r's rows of measured_devices.csv, one per record; ``hosts[n]`` is device n's host."""
    rows = []
    for rec in records:
        n = rec.device
        rep = rec.report
        round_s = rec.t_end - rec.t_start
        compute = rep["device_compute_s"] + rec.server_compute_s
        rows.append({
            "round": r + 1,
            "device": n,
            "rank": n + 1,
            "host": hosts[n],
            "method": spec.method,
            "split": spec.splits[n],
            "local_iters": spec.local_iters[n],
            "batch_size": spec.batch_sizes[n],
            "samples": spec.local_iters[n] * spec.batch_sizes[n],
            "round_s": round_s,
            "compute_s": compute,
            "device_compute_s": rep["device_compute_s"],
            "server_compute_s": rec.server_compute_s,
            "device_cpu_s": rep["device_cpu_s"],
            "server_cpu_s": rec.server_cpu_s,
            "up_bytes": rec.up_bytes,
            "up_s": rec.up_s,
            "up_msgs": rec.up_msgs,
            "up_latency_s": rec.up_latency_s,
            "down_bytes": rep["down_bytes"],
            "down_s": rep["down_s"],
            "down_msgs": int(rep["down_msgs"]),
            "down_latency_s": rep["down_latency_s"],
            "other_s": round_s - compute - rec.up_s - rep["down_s"],
            "wait_s": rep["wait_s"],
            "send_s": rep["send_s"],
            "idle_s": rep["idle_s"],
        })
    return rows


def round_row(
    spec: TrainSpec, done: int, records: list[DeviceRecord], t0: float, t_train: float, t1: float, t2: float
) -> dict:
    """The row of measured_rounds.csv of round ``done`` (1-based), from the server's clock: start t0, last
    upload t_train, aggregated t1, evaluated t2."""
    samples = sum(k * d for k, d in zip(spec.local_iters, spec.batch_sizes, strict=True))
    train_s = t_train - t0
    return {
        "round": done,
        "method": spec.method,
        "wall_s": t1 - t0,
        "train_s": train_s,
        "aggregate_s": t1 - t_train,
        "eval_s": t2 - t1,
        "samples": samples,
        "samples_per_s": samples / train_s if train_s > 0 else math.nan,
        "up_bytes": sum(rec.up_bytes for rec in records),
        "down_bytes": sum(rec.report["down_bytes"] for rec in records),
        "max_round_s": max(rec.t_end - rec.t_start for rec in records),
        "sum_round_s": sum(rec.t_end - rec.t_start for rec in records),
    }


def summary(
    spec: TrainSpec, num_devices: int, num_units: int, hosts: list[str], metrics: list[dict], round_rows: list[dict]
) -> dict:
    """summary.json of a complete run; ``hosts``: the server's, then the devices'."""
    last = metrics[-1]
    return {
        "spec": spec.to_dict(),
        "runtime": "distributed",
        "backend": "gloo",
        "num_devices": num_devices,
        "num_units": num_units,
        "hosts": hosts,
        "rounds_completed": len(metrics),
        "final_test_acc": last["test_acc"],
        "final_test_loss": last["test_loss"],
        "final_train_loss": last["train_loss"],
        "best_test_acc": max(m["test_acc"] for m in metrics),
        "wall_time_s": float(sum(row["wall_s"] for row in round_rows)),
        "train_time_s": float(sum(row["train_s"] for row in round_rows)),
        "torch_version": torch.__version__,
    }
