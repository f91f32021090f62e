# Two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k plan -x"`.
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the package metadata or this file changes. The demo needs the report extra.
$(VENV)/.installed-core: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[report]'
	touch $@

$(VENV)/.installed-test: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,report,serve,ray]'
	touch $@ $(VENV)/.installed-core

# The framework converters (splitinfer[torch], splitinfer[tf]) for the tests of framework models in:
# each installed on its own, a failure only a warning (those tests then skip, saying why). torch is the
# CPU build this machine has a wheel of (TORCH=... for another).
TORCH ?= torch==2.13.0
$(VENV)/.installed-frameworks: pyproject.toml Makefile | $(VENV)/.installed-test
	@if $(BIN)/pip install --quiet '$(TORCH)' 'onnxscript>=0.3'; then echo "installed $(TORCH)"; \
	  else echo "warning: could not install $(TORCH): the PyTorch conversion tests will skip"; fi
	@if $(BIN)/pip install --quiet -e '.[tf]'; then echo "installed tensorflow-cpu and tf2onnx"; \
	  else echo "warning: could not install tensorflow-cpu/tf2onnx: the TensorFlow conversion tests will skip"; fi
	touch $@

demo: $(VENV)/.installed-core
	$(BIN)/splitinfer demo

test: $(VENV)/.installed-test $(VENV)/.installed-frameworks
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis splitinfer-report
