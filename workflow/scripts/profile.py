from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.profile import stage_profile  # noqa: E402

p = snakemake.params
cfg = {"model": p.model, "dataset": p.dataset, "profile": p.profile, "physical": p.bits, "seed": p.seed}
stage_profile(cfg, snakemake.output.json, snakemake.output.csv)
