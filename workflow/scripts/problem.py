from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.problem import stage_problem  # noqa: E402

run_stage(stage_problem, **dict(snakemake.params.items()), scenario_path=snakemake.input.scenario,
          profile_path=snakemake.input.profile, out=snakemake.output[0])
