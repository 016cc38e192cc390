# Two commands matter: `make run` (the main job) and `make test` (the suite).
# Both create or update the local virtual environment on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,peers]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m hybrid.run --dataset wisdm2019 --activities locomotion --out reports/latest

test: $(STAMP)
	$(PY) -m pytest -q tests --benchmark-disable

bench: $(STAMP)
	$(PY) -m pytest -q tests/benchmarks --benchmark-only --benchmark-autosave --benchmark-storage=reports/benchmarks

clean:
	rm -rf $(VENV) .cache
