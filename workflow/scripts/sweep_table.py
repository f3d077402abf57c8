from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.tables import stage_sweep_table  # noqa: E402

run_stage(stage_sweep_table, **dict(snakemake.params.items()), solutions=list(snakemake.input.solutions),
          out=snakemake.output[0])
