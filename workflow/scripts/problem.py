from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.problem import stage_problem  # noqa: E402

cfg = {"optimize": {"optimizer_state_copies": snakemake.params.optimizer_state_copies}}
stage_problem(cfg, snakemake.input.scenario, snakemake.input.profile, snakemake.output[0])
