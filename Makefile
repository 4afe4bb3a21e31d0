# Quick start: `make demo` and `make test` work from a fresh clone (they create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
DEMO_OUT ?= demo-output

.PHONY: venv install install-test demo test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is the CPU build the machine provides; the package's own range accepts it.
$(VENV)/.installed: $(VENV)/bin/python setup.py
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/vlavit demo --out $(DEMO_OUT)

test: install-test
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_decompose.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
