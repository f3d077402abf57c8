from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.profile import stage_profile  # noqa: E402

stage_profile(**dict(snakemake.params.items()), out_json=snakemake.output.json, out_csv=snakemake.output.csv)
