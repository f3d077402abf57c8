# Reports: the notebooks in notebooks/ run by papermill on the pipeline's outputs only, rendered to HTML, with
# their figures (PNG and PDF) in {results_dir}/figures/{name}/; `snakemake --report report.html` collects the PNGs.
# (No `def` here: `snakemake --lint` objects to functions and rules in one file, so the helpers are lambdas.)
import json
import os
import sys

from snakemake.settings.types import DeploymentMethod

NOTEBOOKS = ("latency", "training", "profile")
REPORT_SCENARIO = config["report"]["scenario"]

# The python that runs papermill, and so the kernel: jupyter starts kernel `python3` with the python that
# asks for it. Under --use-conda the environment's `python`, otherwise the one running Snakemake (the venv's).
NOTEBOOK_PYTHON = (
    "python"
    if DeploymentMethod.CONDA
    in getattr(getattr(workflow, "deployment_settings", None), "deployment_method", ())
    else sys.executable
)

# Per notebook: the pipeline outputs it reads (named inputs) and the papermill parameter each one becomes.
NOTEBOOK_DATA = {
    "latency": {
        "sweep_tables": [result("sweep_table", sweep=s) for s in config["sweeps"]],
        "rounds_tables": [result("rounds_table", scenario=s) for s in PER_ROUND],
        "problem": result("problem", scenario=REPORT_SCENARIO),
        "ao_solution": result("solution", scenario=REPORT_SCENARIO, method="ao"),
        # the emulate stage's table and the profile its refinement uses, when `emulate` is configured
        **(
            {
                "emulation_table": result("emulation_table"),
                "emulation_profile": result("profile_json", model=MODEL),
            }
            if config.get("emulate")
            else {}
        ),
    },
    "training": {"metrics": train_targets()},
    "profile": {
        "profile_json": result("profile_json", model=MODEL),
        "profile_csv": result("profile_csv", model=MODEL),
    },
}
# Parameters that are not files, from config["report"].
NOTEBOOK_SETTINGS = {
    "latency": {"scenario": REPORT_SCENARIO},
    "training": {
        "target_accuracy": config["report"]["target_accuracy"],
        "deadline_s": config["report"]["deadline_s"],
    },
    "profile": {},
}
# All parameters of a notebook as one JSON (= YAML) document for `papermill -y`.
NOTEBOOK_PARAMETERS = {
    name: json.dumps(
        {
            **NOTEBOOK_DATA[name],
            **NOTEBOOK_SETTINGS[name],
            "out_dir": result("figures", name=name),
        }
    )
    for name in NOTEBOOKS
}

# The rendered notebooks (the figures are outputs of the same jobs).
report_targets = lambda: [
    result("notebook", name=name, ext="html") for name in NOTEBOOKS
]


rule notebook:
    input:
        unpack(
            lambda w: {
                "notebook": str(REPO / "notebooks" / f"{w.name}.ipynb"),
                "code": module_sources("hetsfl.report", SRC),
                **NOTEBOOK_DATA[w.name],
            }
        ),
    output:
        ipynb=result("notebook", ext="ipynb"),
        html=report(
            result("notebook", ext="html"),
            caption="../report/notebook.rst",
            category="Notebooks",
            labels={"notebook": "{name}"},
        ),
        figures=report(
            directory(result("figures")),
            patterns=["{figure}.png"],
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{name}",
            labels={"notebook": "{name}", "figure": "{figure}"},
        ),
    log:
        log_path("notebook"),
    wildcard_constraints:
        name="|".join(NOTEBOOKS),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        python=NOTEBOOK_PYTHON,
        parameters=lambda w: NOTEBOOK_PARAMETERS[w.name],
        html_dir=lambda w, output: os.path.dirname(output.html),
    shell:
        "{params.python:q} -m papermill {input.notebook:q} {output.ipynb:q} -k python3"
        " --no-progress-bar --log-output -y {params.parameters:q} > {log:q} 2>&1"
        " && {params.python:q} -m nbconvert --to html --output-dir {params.html_dir:q}"
        " --output {wildcards.name} {output.ipynb:q} >> {log:q} 2>&1"
