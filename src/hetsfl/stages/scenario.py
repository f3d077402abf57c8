"""Stage `scenario`: draw the devices and channels of one scenario."""

from __future__ import annotations

import logging
from pathlib import Path

from hetsfl.io import write_json
from hetsfl.system.scenario import generate_scenario

log = logging.getLogger("hetsfl.stages.scenario")


def stage_scenario(*, spec: dict, seed: int, name: str, out: str | Path) -> dict:
    """Draw scenario ``name`` from its full physical ``spec`` (see hetsfl.config.scenario_spec)."""
    scenario = generate_scenario(spec, seed, name)
    write_json(out, scenario)
    log.info("scenario %s: %d devices written to %s", name, len(scenario["devices"]), out)
    return scenario
