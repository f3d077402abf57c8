from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.common import run_stage  # noqa: E402
from hetsfl.stages.profile import stage_profile  # noqa: E402

out = snakemake.output
run_stage(stage_profile, **dict(snakemake.params.items()), out_json=out.json, out_csv=out.csv)
