"""Reading a profile file (results/profiles/<model>.json) without importing torch.

The optimisation stages only need the numbers; hetsfl.profiling.measure (which measures them with torch) writes
the file and re-exports ``read_profile``.
"""

from __future__ import annotations

import json
from pathlib import Path

from hetsfl.errors import DataError


def _check_profile(data: object, path: Path) -> dict:
    """Return data if it looks like a profile, else raise DataError naming the file."""
    fix = "rerun the profile stage to regenerate it"
    if not isinstance(data, dict) or not isinstance(data.get("units"), list) or not data["units"]:
        raise DataError(
            f"profile file {path} is corrupt: expected a JSON object with a non-empty 'units' list; {fix}"
        )
    required = ("name", "fwd_flops", "bwd_flops", "out_bits", "param_bits")
    for i, unit in enumerate(data["units"]):
        missing = [k for k in required if not isinstance(unit, dict) or k not in unit]
        if missing:
            raise DataError(f"profile file {path} is corrupt: unit {i} lacks {', '.join(missing)}; {fix}")
    return data


def read_profile(json_path: str | Path) -> dict:
    """Read a profile JSON written by write_profile; DataError if it is missing or corrupt."""
    path = Path(json_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"profile file {path} not found; rerun the profile stage to create it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"profile file {path} cannot be read ({exc}); rerun the profile stage") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"profile file {path} is corrupt ({exc}); rerun the profile stage to regenerate it"
        ) from None
    return _check_profile(data, path)
