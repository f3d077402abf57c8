from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.rounds import stage_rounds  # noqa: E402

run_stage(stage_rounds, **dict(snakemake.params.items()), problem_path=snakemake.input.problem,
          out=snakemake.output[0])
