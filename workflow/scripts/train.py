from hetsfl.io import setup_logging

setup_logging(snakemake.log[0])
from hetsfl.stages.train import stage_train  # noqa: E402

p = snakemake.params
cfg = {"model": p.model, "dataset": p.dataset, "train": p.train}
out_dir = snakemake.output.metrics.rsplit("/", 1)[0]
stage_train(cfg, snakemake.wildcards.method, int(snakemake.wildcards.seed), snakemake.input.problem,
            snakemake.input.solution, out_dir)
