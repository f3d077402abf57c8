"""Stage `sweep_table`: tidy tables of solutions, one row per scenario x method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hetsfl.errors import ConfigError
from hetsfl.io import write_table
from hetsfl.stages.common import read_document

if TYPE_CHECKING:
    import pandas as pd


def stage_sweep_table(
    *,
    solutions: Sequence[str | Path],
    out: str | Path,
    sweep: str | None = None,
    key: str | None = None,
    values: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """One row per solution file; the scenario is the one named in the solution's ``meta``.

    For a sweep table, ``values`` maps each sweep point (scenario name) to its value of ``key``.
    """
    from hetsfl.optim.tables import solution_row, solutions_table

    rows = []
    for path in solutions:
        solution = read_document(path, "solution")
        scenario = solution.get("meta", {}).get("scenario")
        if not isinstance(scenario, str):
            raise ConfigError(f"solution file {path} does not name its scenario (meta.scenario); regenerate it")
        extra = {}
        if sweep is not None:
            if values is None or scenario not in values:
                known = ", ".join(values or {})
                raise ConfigError(
                    f"solution file {path} is for scenario {scenario!r}, which is not a point of sweep {sweep!r} "
                    f"(points: {known})"
                )
            value = values[scenario]
            extra = {"sweep": sweep, "key": key, "value": value if not isinstance(value, list) else str(value)}
        rows.append(solution_row(solution, scenario, extra))
    table = solutions_table(rows)
    write_table(out, table)
    return table
