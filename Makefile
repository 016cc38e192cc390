# Two commands matter: `make run` (the main job) and `make test` (the suite).
# Both create or update the local virtual environment on first use, then make sure the default
# dataset (WISDM-2019 phone accelerometer) is under the data root ($HAR_DATA_DIR, else ./data):
# nothing is fetched when it is there; otherwise one checksummed download, or one error line + exit 2.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the suite's processes: most tests bound torch to one thread, so two workers use two cores; a module's
# tests stay in one process (--dist loadscope) and share its module fixtures (one quick hybrid.run, say)
TEST_WORKERS ?= 2

.PHONY: run test bench venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,peers,firmware,distributed]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m har.data ensure wisdm2019
	$(PY) -m hybrid.run --dataset wisdm2019 --activities locomotion --out reports/latest

test: $(STAMP)
	$(PY) -m har.data ensure wisdm2019
	$(PY) -m pytest -q tests --benchmark-disable -n $(TEST_WORKERS) --dist loadscope

bench: $(STAMP)
	$(PY) -m pytest -q tests/benchmarks --benchmark-only --benchmark-autosave --benchmark-storage=reports/benchmarks

clean:
	rm -rf $(VENV) .cache
