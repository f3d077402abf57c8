from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.train import stage_train  # noqa: E402

stage_train(**dict(snakemake.params.items()), method=snakemake.wildcards.method, seed=int(snakemake.wildcards.seed),
            problem_path=snakemake.input.problem, solution_path=snakemake.input.solution)
