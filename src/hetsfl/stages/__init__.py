"""The pipeline's stages: inputs are paths and the validated config, outputs are files.

Snakemake rules (workflow/scripts/*.py) and the `hetsfl` command line both call these. Each stage is its own
module so that a rule depends only on the code it runs.
"""
