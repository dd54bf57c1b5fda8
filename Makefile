# Two entry points: `make demo` and `make test`; each creates .venv from nothing but python3 + pip.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# the demo venv holds the extras the README's examples use (reports, web page, deep models, Dask)
$(VENV)/.core: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[report,web,deep,dist]'
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.core
	$(BIN)/cvret demo

test: $(VENV)/.test
	$(BIN)/python -m pytest -q

lint: $(VENV)/.test
	$(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/ruff check cvretrieval tests benchmarks
	$(BIN)/mypy cvretrieval

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
