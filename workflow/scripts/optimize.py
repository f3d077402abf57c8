from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.optimize import stage_optimize  # noqa: E402

run_stage(stage_optimize, **snakemake.params.settings, problem_path=snakemake.input.problem,
          method=snakemake.wildcards.method, out=snakemake.output[0])
