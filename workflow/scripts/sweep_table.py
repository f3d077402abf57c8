from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.tables import stage_sweep_table  # noqa: E402

stage_sweep_table(**dict(snakemake.params.items()), solutions=list(snakemake.input.solutions),
                  out=snakemake.output[0])
