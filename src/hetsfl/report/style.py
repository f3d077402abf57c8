"""Report style: display names and a fixed order of the methods, one colour and marker per method, the theme."""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib.pyplot as plt
import seaborn as sns

# Display names and a fixed order (so a method has the same colour and marker in every figure).
METHOD_LABELS = {
    # optimisation methods (results/solutions, results/tables)
    "ao": "AO (proposed)",
    "ao_cvxpy": "AO (cvxpy bandwidth)",  # the reference: AO with the bandwidth step solved by cvxpy
    "global": "global optimum",
    "exhaustive": "exhaustive",
    "equal_bandwidth": "equal bandwidth",
    "fixed_split": "fixed split",
    "random_split": "random split",
    "sfl_v2_common": "SFL-V2 (common split)",  # SFL-V2's own clock (optim.sfl_v2)
    # training methods (results/train); fl and sl are shared with the optimisation methods
    "sfl": "SFL (AO splits)",
    "sfl_v2": "SFL-V2 (own splits)",  # also the optimisation method: splits for SFL-V2's own round
    "sfl_fixed": "SFL (fixed split)",
    "fl": "FL",
    "sl": "SL",
}
METHOD_ORDER = list(METHOD_LABELS)
BASELINES = ("fl", "sl", "sfl_fixed")


def use_style() -> None:
    """The seaborn theme of every report figure."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.25)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "legend.frameon": True, "pdf.fonttype": 42})


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """Methods in the fixed report order (unknown ones last, alphabetically)."""
    methods = set(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


# tab10 colour index and marker per method: training methods share the colour of the optimisation method
# whose splits they use (sfl -> ao's family; sfl_fixed -> fixed_split; sfl_v2 its own).
_STYLE = {
    "ao": (0, "o"), "ao_cvxpy": (0, "*"), "global": (1, "s"), "exhaustive": (7, "X"), "equal_bandwidth": (2, "D"),
    "fixed_split": (4, "v"), "random_split": (5, "P"), "fl": (8, "^"), "sl": (3, "h"),
    "sfl": (0, "o"), "sfl_v2": (6, "s"), "sfl_fixed": (4, "v"), "sfl_v2_common": (9, "d"),
}
_EXTRA_MARKERS = ["<", ">", "*", "p", "d", "H", "8"]


def method_palette(methods: Iterable[str] | None = None) -> dict[str, tuple]:
    """A colour per method *label*, the same in every figure (methods unknown here get further colours)."""
    tab = sns.color_palette("tab10", 10)
    extra = sns.color_palette("dark", 10)
    palette = {method_label(m): tab[i] for m, (i, _) in _STYLE.items()}
    for k, m in enumerate(sorted(set(methods or ()) - set(_STYLE))):
        palette[method_label(m)] = extra[k % len(extra)]
    return palette


def method_markers(methods: Iterable[str]) -> dict[str, str]:
    """A marker per method label for ``methods``."""
    unknown = sorted(set(methods) - set(_STYLE))
    markers = {method_label(m): _STYLE[m][1] for m in methods if m in _STYLE}
    markers.update({method_label(m): _EXTRA_MARKERS[k % len(_EXTRA_MARKERS)] for k, m in enumerate(unknown)})
    return markers
