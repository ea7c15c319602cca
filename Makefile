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

.PHONY: lab demo test lint typecheck pytest bench clean

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

test: lint typecheck pytest

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/profile_overhead.py
	$(BIN)/python bench/ledger_overhead.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
