"""The self-contained problem document from a scenario and a profile (system model section 8)."""

from __future__ import annotations

# keys of the optional `overheads` block (problem documents, and optimize.overheads in the config)
OVERHEAD_KEYS = ("per_message_s", "device_batch_flops", "server_batch_flops")


def build_problem(scenario: dict, profile: dict, optimizer_state_copies: int = 1) -> dict:
    """The self-contained problem document (schemas/problem.schema.json) from a scenario and a profile.

    Profile FLOPs are per sample; activation and parameter bits are rescaled if the scenario's bit widths
    differ from the profile's.
    """
    meta = profile.get("meta", {})
    act_scale = scenario["bits_per_activation"] / meta.get("bits_per_activation", scenario["bits_per_activation"])
    par_scale = scenario["bits_per_param"] / meta.get("bits_per_param", scenario["bits_per_param"])
    layers = [
        {
            "name": u["name"],
            "fwd_flops": float(u["fwd_flops"]),
            "bwd_flops": float(u["bwd_flops"]),
            "out_bits": float(u["out_bits"]) * act_scale,
            "param_bits": float(u["param_bits"]) * par_scale,
        }
        for u in profile["units"]
    ]
    return {
        "total_bandwidth_hz": scenario["total_bandwidth_hz"],
        "noise_psd_w_per_hz": scenario["noise_psd_w_per_hz"],
        "server": dict(scenario["server"]),
        "layers": layers,
        "devices": scenario["devices"],
        "min_split": scenario["min_split"],
        "optimizer_state_copies": int(optimizer_state_copies),
        "seed": int(scenario["seed"]),
        "meta": {"scenario": scenario["name"], "model": meta.get("model", "unknown"),
                 "fading": scenario.get("fading", "none")},
    }



def overheads_block(overheads: dict) -> dict:
    """The problem document's ``overheads`` block: ``overheads`` with absent keys of OVERHEAD_KEYS as 0 (the
    problem schema checks the values and rejects unknown keys, naming them)."""
    return {**dict.fromkeys(OVERHEAD_KEYS, 0.0), **overheads}
