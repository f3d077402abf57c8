"""What the notebooks share: the setup cell, writing figures (atomically, reproducible PDF), reading JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from hetsfl.io import atomic_path
from hetsfl.report.latency import SWEEP_KEYS
from hetsfl.report.style import use_style

# Figure stems each notebook may write (PNG and PDF); the latency sweeps appear only for the sweeps present.
FIGURES = {
    "latency": [*(f"latency_vs_{k}" for k in SWEEP_KEYS), "ao_breakdown", "ao_iterations", "split_vs_device",
                "server_sharing", "server_sharing_gain", "rounds_cumulative_time"],
    "training": ["accuracy_vs_round", "accuracy_vs_time"],
    "profile": ["profile_flops", "profile_sizes", "profile_cuts", "profile_time_fit"],
}


def setup_notebook(out_dir: str | os.PathLike) -> Path:
    """The first cell of every report notebook: the figure style, wide pandas printing, the figure directory
    ``out_dir`` (created, returned), and which python runs the kernel (printed)."""
    use_style()
    pd.set_option("display.width", 200, "display.max_columns", 30)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("python:", sys.executable)
    print("figures ->", out)
    return out


def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` to ``<stem>.png`` and ``<stem>.pdf`` (creating the directory); return the paths.

    Each file is written under a temporary name in the same directory and renamed into place, so a reader
    never sees a half-written figure. The PDF carries no creation date, so it is reproducible.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    return paths


def publish(fig: Figure, stem: str | os.PathLike) -> list[Path]:
    """In a notebook: :func:`save_figure`, show the saved PNG (not a third rendering) and close ``fig``."""
    paths = save_figure(fig, stem)
    plt.close(fig)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return paths
    if get_ipython() is not None:
        display(Image(filename=str(paths[0])))
    return paths


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return json.load(fh)
