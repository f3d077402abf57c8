"""Per-unit profiles of a model: measuring them (measure, imports torch) and reading profile files (files, does not)."""
