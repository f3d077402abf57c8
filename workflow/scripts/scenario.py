from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.scenario import stage_scenario  # noqa: E402

stage_scenario(spec=snakemake.params.spec, seed=snakemake.params.seed, name=snakemake.wildcards.scenario,
               out=snakemake.output[0])
