from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.emulate import stage_emulate  # noqa: E402

params = dict(snakemake.params.items())
run_stage(stage_emulate, **params, problem_path=snakemake.input.problem, table_path=snakemake.output.table,
          solution_paths=dict(zip(params["methods"], snakemake.input.solutions, strict=True)), progress=False)
