# hetsfl: scenario -> profile -> problem -> optimize -> tables -> train (-> emulate) -> reports.
# Run: snakemake --cores all   (config/config.yaml is the embedded default; --configfile to change it)
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names complete configurations (they are not merged into it).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/scenario.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/optimize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/emulate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    optimize_all,
    train_all,
    emulate_all,
    report_all,
    scenario,
    problem,
    optimize,
    scenario_table,
    sweep_table,


rule all:
    default_target: True
    input:
        optimisation_targets(),
        train_targets(),
        emulate_targets(),
        report_targets(),


rule optimize_all:
    input:
        optimisation_targets(),


rule train_all:
    input:
        train_targets(),


rule emulate_all:
    input:
        emulate_targets(),


rule report_all:
    input:
        report_targets(),
