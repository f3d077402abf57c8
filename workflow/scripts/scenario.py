from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.scenario import stage_scenario  # noqa: E402

p = snakemake.params
run_stage(stage_scenario, spec=p.spec, seed=p.seed, name=snakemake.wildcards.scenario, out=snakemake.output[0])
