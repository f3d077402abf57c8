from pathlib import Path

from hetsfl.config import all_scenarios, scenario_spec
from hetsfl.config import exit_on_config_error, snakemake_config
from hetsfl.deps import module_sources
from hetsfl.stages.common import TRAIN_METHODS

# The project's validator, not snakemake.utils.validate: config files re-read strictly (duplicate keys), every
# number finite, one-line errors naming the key and the allowed values; prints it and exits 1.
config.update(exit_on_config_error(snakemake_config, config, workflow.configfiles))

REPO = Path(workflow.basedir)  # the folder of the Snakefile
SRC = REPO / "src"
# With --use-conda every rule runs in the project environment (environment.yml).
ENV = "../../environment.yml"
SCENARIOS = all_scenarios(config)
NAMED = list(config["scenarios"])
MODEL = config["model"]
TRAIN_SCENARIO = config["train"]["scenario"]


wildcard_constraints:
    scenario="[A-Za-z][A-Za-z0-9-]*(_[0-9]+)?",
    method="[a-z0-9_]+",
    sweep="[A-Za-z][A-Za-z0-9-]*",
    seed="[0-9]+",


def code(stage):
    """The package source files a stage runs: editing them reruns the stage."""
    return module_sources(f"hetsfl.stages.{stage}", SRC)


def methods_for(scenario):
    """Optimisation methods solved for a scenario: the configured ones, plus those training needs."""
    methods = list(config["optimize"]["methods"])
    if scenario == TRAIN_SCENARIO:
        for method in config["train"]["methods"]:
            needed = TRAIN_METHODS[method][0]
            if needed not in methods:
                methods.append(needed)
    return methods


def solutions(scenario):
    return [f"results/solutions/{scenario}/{m}.json" for m in methods_for(scenario)]


def sweep_scenarios(sweep):
    return [f"{sweep}_{i}" for i in range(len(config["sweeps"][sweep]["values"]))]


def optimisation_targets():
    targets = ["results/tables/scenarios.csv"]
    targets += [f"results/tables/sweep_{s}.csv" for s in config["sweeps"]]
    return targets


def train_targets():
    return [
        f"results/train/{m}/seed{s}/metrics.csv"
        for m in config["train"]["methods"]
        for s in config["train"]["seeds"]
    ]
