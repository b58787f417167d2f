# astrosleuth-astro developer entry points.
#   make demo   - create .venv, install pinned deps, upscale the shipped sample
#   make test   - same install, then the fast suite (not marked slow)
#   make test-slow - only the tests marked slow (CI runs it after make test)
#   make test-all  - everything
#   make lint   - ruff check + format check

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-slow test-all lint format clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "error: Python >= 3.10 is required ($(PYTHON) is older)"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu run: apt-get install python3-venv"; exit 2; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[torch,test]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m astrosleuth_astro.demo --out demo_output

test: install
	$(BIN)/python -m pytest -n 2 -q -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -n 2 -q -m slow $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check astrosleuth_astro tests siril_scripts bench
	$(BIN)/ruff format --check astrosleuth_astro tests siril_scripts bench

format: install
	$(BIN)/ruff check --fix astrosleuth_astro tests siril_scripts bench
	$(BIN)/ruff format astrosleuth_astro tests siril_scripts bench

clean:
	rm -rf $(VENV) demo_output build dist *.egg-info .pytest_cache
