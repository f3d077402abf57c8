from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.optimize import stage_optimize  # noqa: E402

cfg = {"optimize": snakemake.params.optimize}
stage_optimize(cfg, snakemake.input.problem, snakemake.wildcards.method, snakemake.output[0])
