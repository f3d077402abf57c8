from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.train import stage_train  # noqa: E402

w = snakemake.wildcards
run_stage(stage_train, **dict(snakemake.params.items()), method=w.method, seed=int(w.seed),
          problem_path=snakemake.input.problem, solution_path=snakemake.input.solution)
