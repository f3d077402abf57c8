from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.scenario import stage_scenario  # noqa: E402

stage_scenario(snakemake.params.spec, snakemake.params.seed, snakemake.wildcards.scenario, snakemake.output[0])
