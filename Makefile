# The two commands of the README. Both install what they need first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: help install demo lint format-check test parity bench

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' Makefile | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 14

install:  ## the requirements (CPU torch from the local index on CPU machines)
	$(PIP) install -q -r requirements.txt

demo: install  ## reduced label-efficiency study: fine-tune with 5 % of the labels, 2 seeds, scratch vs the shipped pre-trained backbone, next to a random forest (about 16 min on 2 cores)
	$(PYTHON) -m experiments.demo

lint:  ## ruff lint rules of ruff.toml
	$(PYTHON) -m ruff check .

format-check:  ## ruff format on the files ruff.toml does not exclude yet
	$(PYTHON) -m ruff format --check .

test: install lint  ## lint, then the whole test suite on CPU (what CI runs), one pytest worker per core (at most 4)
	$(PYTHON) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

parity: install  ## our STCLN vs the authors' model output
	$(PYTHON) -m utils.check_parity --fixture tests/data/authors_parity_small
	@if [ -d ../shared/fixtures/authors_parity ]; then $(PYTHON) -m utils.check_parity --fixture ../shared/fixtures/authors_parity; fi

bench: install  ## CPU speed benchmarks: train step and data loading
	$(PYTHON) -m bench.train_step
	$(PYTHON) -m bench.data_loading
