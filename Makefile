# Two commands do all set-up on a fresh machine:
#   make lab   - JupyterLab on the quickstart notebook (make demo: the same, headless)
#   make test  - lint, type-check and every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt
# jupyter lab refuses to start as root without it.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
NOTEBOOK := notebooks/01_quickstart.ipynb

# The optimizer and loader also run under pandas 2.x (the main venv has pandas 3).
PANDAS2_VENV := .venv-pandas2
PANDAS2_TESTS := tests/core/test_dataframe.py tests/core/test_loader.py tests/magics/test_optimize.py

.PHONY: lab demo test lint typecheck pytest pytest-pandas2 bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --upgrade pip

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(INSTALL) -e '.[test]'
	touch $@

$(VENV)/.installed-lab: pyproject.toml constraints.txt | $(BIN)/python
	$(INSTALL) -e '.[lab]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(BIN)/python
	$(INSTALL) -e '.[bench,test]'
	touch $@

$(PANDAS2_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PANDAS2_VENV)
	$(PANDAS2_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PANDAS2_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e '.[test]' 'pandas>=2.2,<3' 'pandas-stubs<3'
	touch $@

lab: $(VENV)/.installed-lab
	$(BIN)/jupyter lab $(ROOT_FLAG) $(NOTEBOOK)

demo: $(VENV)/.installed-lab
	mkdir -p build
	$(BIN)/jupyter nbconvert --to notebook --execute $(NOTEBOOK) --output-dir build
	$(BIN)/jupyter nbconvert --to html build/$(notdir $(NOTEBOOK)) --output-dir build
	@echo "executed notebook and HTML in build/"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check meno_jupyter tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

pytest: $(VENV)/.installed-test
	$(BIN)/python -m pytest

pytest-pandas2: $(PANDAS2_VENV)/.installed
	$(PANDAS2_VENV)/bin/python -c "import pandas; print('pandas', pandas.__version__)"
	$(PANDAS2_VENV)/bin/python -m pytest -p no:cacheprovider $(PANDAS2_TESTS)

test: lint typecheck pytest pytest-pandas2

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/profile_overhead.py
	$(BIN)/python bench/ledger_overhead.py

clean:
	rm -rf $(VENV) $(PANDAS2_VENV) build .mypy_cache .ruff_cache .pytest_cache
