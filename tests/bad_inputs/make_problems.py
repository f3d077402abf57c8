"""Write the corpus of bad problem files (problem/*.json, each with problem/NAME.expect: a fragment of the
one-line error `hetsfl optimize` must print). Rerun after changing a case: python tests/bad_inputs/make_problems.py
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).parent / "problem"


def device(i: int) -> dict:
    return {"id": f"d{i}", "flops": 2.0e9 + 1.0e8 * i, "tx_power_w": 0.2, "channel_gain": 1.0e-10 * (1 + i % 7),
            "batch_size": 16, "local_iters": 5}


BASE = {
    "total_bandwidth_hz": 1.0e7,
    "noise_psd_w_per_hz": 3.98e-21,
    "server": {"flops": 1.0e12, "tx_power_w": 1.0, "sharing": "equal"},
    "layers": [{"name": f"unit{j + 1}", "fwd_flops": 1.0e6 * (j + 1), "bwd_flops": 2.0e6 * (j + 1),
                "out_bits": 1.0e4 * (4 - j), "param_bits": 1.0e5 * (j + 1)} for j in range(4)],
    "devices": [device(i) for i in range(3)],
}


def case(base: dict | None = None, **changes) -> dict:
    """A copy of ``base`` (BASE) with dotted-path changes, e.g. case(**{"devices.1.channel_gain": 1e-300})."""
    doc = copy.deepcopy(BASE if base is None else base)
    for path, value in changes.items():
        *head, last = path.split(".")
        node = doc
        for key in head:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return doc


def many(n: int = 100, **changes) -> dict:
    """A problem with n devices (above the validator's fast-path threshold) and dotted-path changes."""
    return case({**BASE, "devices": [device(i) for i in range(n)]}, **changes)


# name -> (document or raw text, fragment of the expected message)
CASES = {
    "nan_gain": (case(**{"devices.1.channel_gain": float("nan")}), "devices.1.channel_gain"),
    "inf_layer_flops": (case(**{"layers.2.fwd_flops": float("inf")}), "layers.2.fwd_flops"),
    "neg_inf_bandwidth": (case(total_bandwidth_hz=float("-inf")), "total_bandwidth_hz"),
    "tiny_gain": (case(**{"devices.1.channel_gain": 1e-300}), "device d1"),
    "denormal_gain": (case(**{"devices.2.channel_gain": 5e-324}), "device d2"),
    "huge_gain": (case(**{"devices.0.channel_gain": 1e300}), "device d0"),
    "huge_layer_flops": (case(**{"layers.1.bwd_flops": 1e300}), "the layer with the most FLOPs is 'unit2'"),
    "overflowing_flops_sum": (case(**{"layers.0.fwd_flops": 1.7e308, "layers.1.fwd_flops": 1.7e308}), "unit"),
    "tiny_device_flops": (case(**{"devices.1.flops": 1e-300}), "device d1"),
    "tiny_server_flops": (case(**{"server.flops": 1e-300}), "computing time"),
    "huge_out_bits": (case(**{"layers.0.out_bits": 1e300}), "the largest layer is 'unit1'"),
    "huge_bandwidth": (case(total_bandwidth_hz=1e300), "total_bandwidth_hz"),
    "tiny_bandwidth": (case(total_bandwidth_hz=1e-300), "total_bandwidth_hz"),
    "denormal_noise": (case(noise_psd_w_per_hz=1e-320), "N0"),
    "huge_noise": (case(noise_psd_w_per_hz=1e300), "N0"),
    "int_too_large_batch": (case(**{"devices.2.batch_size": 10**400}), "device d2: batch_size is too large"),
    "int_too_large_memory": (case(**{"devices.0.memory_bytes": 10**400}), "device d0: memory_bytes is too large"),
    "int_too_large_iters": (case(**{"devices.1.local_iters": 10**400}), "device d1: local_iters"),
    "int_too_large_param_bits": (case(**{"layers.3.param_bits": 10**400}), "layer unit4: param_bits"),
    "huge_state_copies": (case(optimizer_state_copies=10**400), "optimizer_state_copies"),
    "negative_gain": (case(**{"devices.0.channel_gain": -1.0}), "devices.0.channel_gain"),
    "string_flops": (case(**{"devices.2.flops": "fast"}), "devices.2.flops"),
    "bool_batch": (case(**{"devices.1.batch_size": True}), "devices.1.batch_size"),
    "float_batch": (case(**{"devices.1.batch_size": 16.5}), "devices.1.batch_size"),
    "missing_devices": ({k: v for k, v in BASE.items() if k != "devices"}, "'devices' is a required property"),
    "empty_devices": (case(devices=[]), "devices"),
    "one_layer": (case(layers=BASE["layers"][:1]), "layers"),
    "top_level_list": ([BASE], "<top level>"),
    "duplicate_ids": (case(**{"devices.2.id": "d0"}), "unique"),
    "split_candidate_is_fl": (case(**{"devices.1.split_candidates": [2, 4]}), "device d1: split_candidates [4]"),
    "split_candidate_zero": (case(**{"devices.1.split_candidates": [0, 1]}), "devices.1.split_candidates"),
    "unknown_sharing": (case(**{"server.sharing": "fair"}), "server.sharing"),
    "many_devices_negative_gain": (many(**{"devices.77.channel_gain": -2.0}), "devices.77.channel_gain"),
    "many_devices_nan_in_unknown_key": (many(**{"devices.80.note": float("nan")}), "devices.80.note"),
    "many_devices_bool_iters": (many(**{"devices.64.local_iters": False}), "devices.64.local_iters"),
    "many_devices_missing_key": (many(**{"devices.99": {"id": "d99", "flops": 1e9}}), "devices.99"),
    "many_devices_string_id_list": (many(**{"devices.70.id": ["x"]}), "devices.70.id"),
    "many_devices_int_too_large_gain": (many(**{"devices.66.channel_gain": 10**400}), "device d66: channel_gain"),
    "many_devices_tiny_gain": (many(**{"devices.90.channel_gain": 1e-290}), "device d90"),
    "not_json": ("{\"total_bandwidth_hz\": 1e7,", "not valid JSON"),
    "empty_file": ("", "not valid JSON"),
    "not_utf8": (b"\xff\xfe{}", "problem file"),
}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for old in HERE.iterdir():
        old.unlink()
    for name, (doc, expect) in CASES.items():
        path = HERE / f"{name}.json"
        if isinstance(doc, bytes):
            path.write_bytes(doc)
        elif isinstance(doc, str):
            path.write_text(doc)
        else:
            long = isinstance(doc, dict) and len(doc.get("devices", ())) > 10
            # NaN and Infinity as Python's json writes them; long device lists one device per line
            text = json.dumps(doc, indent=None if long else 1)
            path.write_text((text.replace("}, {", "},\n {") if long else text) + "\n")
        (HERE / f"{name}.expect").write_text(expect + "\n")


if __name__ == "__main__":
    main()
