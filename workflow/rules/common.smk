import os
from pathlib import Path

from hetsfl.config import all_scenarios, scenario_spec
from hetsfl.config import exit_on_config_error, snakemake_config
from hetsfl.deps import module_sources
from hetsfl.stages import settings
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

# Every result and log path, once: {RESULTS} is config["results_dir"], {LOGS} config["logs_dir"], so that
# two configurations with their own roots do not overwrite each other's files.
RESULTS = config["results_dir"].rstrip("/")
LOGS = config["logs_dir"].rstrip("/")
PATHS = {
    "scenario": f"{RESULTS}/scenarios/{{scenario}}.json",
    "profile_json": f"{RESULTS}/profiles/{{model}}.json",
    "profile_csv": f"{RESULTS}/profiles/{{model}}.csv",
    "problem": f"{RESULTS}/problems/{{scenario}}.json",
    "solution": f"{RESULTS}/solutions/{{scenario}}/{{method}}.json",
    "scenario_table": f"{RESULTS}/tables/scenarios.csv",
    "sweep_table": f"{RESULTS}/tables/sweep_{{sweep}}.csv",
    "rounds_table": f"{RESULTS}/tables/rounds_{{scenario}}.csv",
    "train": f"{RESULTS}/train/{{method}}/seed{{seed}}/{{file}}",
    "notebook": f"{RESULTS}/notebooks/{{name}}.{{ext}}",
    "figures": f"{RESULTS}/figures/{{name}}",
    "emulation_table": f"{RESULTS}/tables/emulation.csv",
    "emulation": f"{RESULTS}/emulation/{{method}}/{{file}}",
    "emulation_meta": f"{RESULTS}/emulation/emulation.json",
}
LOG_PATHS = {
    "scenario": f"{LOGS}/scenario/{{scenario}}.log",
    "profile": f"{LOGS}/profile/{{model}}.log",
    "problem": f"{LOGS}/problem/{{scenario}}.log",
    "optimize": f"{LOGS}/optimize/{{scenario}}/{{method}}.log",
    "scenario_table": f"{LOGS}/tables/scenarios.log",
    "sweep_table": f"{LOGS}/tables/sweep_{{sweep}}.log",
    "rounds_table": f"{LOGS}/tables/rounds_{{scenario}}.log",
    "train": f"{LOGS}/train/{{method}}/seed{{seed}}.log",
    "notebook": f"{LOGS}/notebook/{{name}}.log",
    "emulate": f"{LOGS}/emulate/emulate.log",
}


def result(kind, **values):
    """The path of a result; wildcards not given in ``values`` stay wildcards (for rule patterns)."""
    return PATHS[kind].format_map(_Keep(values))


def log_path(kind, **values):
    return LOG_PATHS[kind].format_map(_Keep(values))


class _Keep(dict):
    def __missing__(self, key):
        return f"{{{key}}}"


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
            needed = TRAIN_METHODS[method].solution_method
            if needed not in methods:
                methods.append(needed)
    return methods


def solutions(scenario):
    return [
        result("solution", scenario=scenario, method=m) for m in methods_for(scenario)
    ]


def sweep_scenarios(sweep):
    return [f"{sweep}_{i}" for i in range(len(config["sweeps"][sweep]["values"]))]


# Named scenarios whose channels are redrawn every round: each gets a rounds table (stages.rounds).
PER_ROUND = [
    s for s in NAMED if scenario_spec(config, s)["fading"] == "rayleigh_per_round"
]


def optimisation_targets():
    targets = [result("scenario_table")]
    targets += [result("sweep_table", sweep=s) for s in config["sweeps"]]
    targets += [result("rounds_table", scenario=s) for s in PER_ROUND]
    return targets


def train_targets():
    return [
        result("train", method=m, seed=s, file="metrics.csv")
        for m in config["train"]["methods"]
        for s in config["train"]["seeds"]
    ]


def emulate_targets():
    """The emulation table when `emulate` is configured (else nothing)."""
    return [result("emulation_table")] if config.get("emulate") else []
