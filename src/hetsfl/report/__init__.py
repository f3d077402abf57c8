"""Tables and figures of the reporting notebooks (notebooks/*.ipynb), from the pipeline's output files only.

The functions are pure: they take DataFrames (or the parsed JSON documents) and return numbers, tables or
matplotlib figures; only the ``load_*`` helpers and :func:`read_json` read files and only :func:`save_figure`
(and :func:`publish`, :func:`setup_notebook`) write them. One module per report section:

- :mod:`~hetsfl.report.style`: method labels, order, colours and markers; the theme;
- :mod:`~hetsfl.report.notebook`: the notebooks' setup cell, saving and showing figures, the figure list;
- :mod:`~hetsfl.report.latency`: latency sweeps; :mod:`~hetsfl.report.extensions`: server sharing compared,
  cumulative time under per-round fading; :mod:`~hetsfl.report.solution`: one AO solution;
- :mod:`~hetsfl.report.training`: time to accuracy, accuracy at a deadline, accuracy curves;
- :mod:`~hetsfl.report.profile`: the model profile and the fit of time against FLOPs;
- :mod:`~hetsfl.report.emulation`: predicted against measured times of the emulate stage.

Every public name is re-exported here, so notebooks use ``from hetsfl import report as R; R.<name>``.
"""

from hetsfl.report.emulation import (
    compute_breakdown,
    device_terms_frame,
    emulation_goals,
    load_emulation_table,
    message_overhead,
    plot_device_terms,
    plot_round_times,
    refined_compute,
    round_frame,
    term_ratios,
)
from hetsfl.report.extensions import (
    SHARING_KEY,
    load_rounds,
    plot_cumulative_time,
    plot_sharing,
    plot_sharing_gain,
    rounds_summary,
    sharing_gain,
    sharing_table,
)
from hetsfl.report.latency import (
    SWEEP_AXES,
    SWEEP_KEYS,
    infeasible_rows,
    load_sweep_tables,
    parse_sweep_value,
    plot_sweep,
    skipped_note,
    sweep_axis,
    sweep_pivot,
)
from hetsfl.report.notebook import FIGURES, publish, read_json, save_figure, setup_notebook
from hetsfl.report.profile import (
    cut_table,
    fit_time_model,
    load_profile,
    plot_profile_cuts,
    plot_profile_flops,
    plot_profile_sizes,
    plot_time_fit,
    r_squared,
    time_fit_table,
)
from hetsfl.report.solution import (
    breakdown_frame,
    iterations_frame,
    plot_ao_iterations,
    plot_breakdown,
    plot_split_vs_device,
    split_device_frame,
)
from hetsfl.report.style import (
    BASELINES,
    METHOD_LABELS,
    METHOD_ORDER,
    method_label,
    method_markers,
    method_palette,
    ordered_methods,
    use_style,
)
from hetsfl.report.training import (
    accuracy_at_deadline,
    default_deadline,
    load_runs,
    plot_accuracy,
    time_to_accuracy,
    training_table,
)

__all__ = [
    "infeasible_rows",
    "skipped_note",
    "BASELINES",
    "FIGURES",
    "METHOD_LABELS",
    "METHOD_ORDER",
    "SHARING_KEY",
    "SWEEP_AXES",
    "SWEEP_KEYS",
    "accuracy_at_deadline",
    "breakdown_frame",
    "cut_table",
    "device_terms_frame",
    "emulation_goals",
    "load_emulation_table",
    "message_overhead",
    "plot_device_terms",
    "plot_round_times",
    "compute_breakdown",
    "refined_compute",
    "round_frame",
    "term_ratios",
    "default_deadline",
    "fit_time_model",
    "iterations_frame",
    "load_profile",
    "load_rounds",
    "load_runs",
    "load_sweep_tables",
    "method_label",
    "method_markers",
    "method_palette",
    "ordered_methods",
    "parse_sweep_value",
    "plot_accuracy",
    "plot_ao_iterations",
    "plot_breakdown",
    "plot_cumulative_time",
    "plot_profile_cuts",
    "plot_profile_flops",
    "plot_profile_sizes",
    "plot_sharing",
    "plot_sharing_gain",
    "plot_split_vs_device",
    "plot_sweep",
    "plot_time_fit",
    "publish",
    "r_squared",
    "read_json",
    "rounds_summary",
    "save_figure",
    "setup_notebook",
    "sharing_gain",
    "sharing_table",
    "split_device_frame",
    "sweep_axis",
    "sweep_pivot",
    "time_fit_table",
    "time_to_accuracy",
    "training_table",
    "use_style",
]
