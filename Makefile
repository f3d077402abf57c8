# The two commands of the README:
#   make reproduce   set up (venv, packages, data) and run the whole pipeline on config/config.yaml
#   make test        set up and run every check: ruff, snakefmt, snakemake --lint, dry runs, pytest
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIGS := $(wildcard config/*.yaml)

.PHONY: setup reproduce test lint dryrun pytest bench report clean

setup:
	scripts/setup.sh $(VENV)

reproduce: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

report: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --report report.html

lint: setup
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/mypy
	$(BIN)/snakemake --lint --configfile config/config.yaml

dryrun: setup
	@for c in $(CONFIGS); do echo "dry run: $$c"; PATH=$(BIN):$$PATH $(BIN)/snakemake -n --quiet --configfile $$c || exit 1; done

pytest: setup
	PATH=$(BIN):$$PATH $(BIN)/pytest -n 2 --dist loadfile tests

test: lint dryrun pytest

bench: setup
	$(BIN)/python benchmarks/bench_optimize.py

clean:
	rm -rf results logs .snakemake report.html
