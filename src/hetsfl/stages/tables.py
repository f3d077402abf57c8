"""Stage `sweep_table`: tidy tables of solutions, one row per scenario x method."""

from __future__ import annotations

from pathlib import Path

from hetsfl.io import write_table
from hetsfl.optim.problem import read_json


def stage_sweep_table(cfg: dict, sweep: str | None, solutions: list[str | Path], out: str | Path):
    """Rows for every solution file named results/solutions/<scenario>/<method>.json."""
    from hetsfl.config import sweep_points
    from hetsfl.optim.tables import solution_row, solutions_table

    points = sweep_points(cfg)
    rows = []
    for path in solutions:
        path = Path(path)
        scenario = path.parent.name
        extra = {}
        if sweep is not None:
            _, i = points[scenario]
            spec = cfg["sweeps"][sweep]
            value = spec["values"][i]
            extra = {"sweep": sweep, "key": spec["key"], "value": value if not isinstance(value, list) else str(value)}
        rows.append(solution_row(read_json(path, "solution"), scenario, extra))
    table = solutions_table(rows)
    write_table(out, table)
    return table
