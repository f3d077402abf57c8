from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.tables import stage_sweep_table  # noqa: E402

cfg = {"sweeps": snakemake.params.sweeps}
stage_sweep_table(cfg, snakemake.params.sweep, snakemake.input.solutions, snakemake.output[0])
