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

VLAVIT := OMP_NUM_THREADS=1 $(VENV)/bin/vlavit
TINY := $(DEMO_OUT)/tiny-video-lavit

# The main job on a fresh machine, no downloads: decompose a synthetic clip, then exercise the whole system
# on a tiny random checkpoint (understanding, text-to-video, reconstruction through the tokenizers).
demo: install
	$(VLAVIT) demo --out $(DEMO_OUT)
	$(VLAVIT) tiny-checkpoint $(TINY) --overwrite
	$(VLAVIT) ask --model $(TINY) $(DEMO_OUT)/sample.mp4 "What moves in this video?"
	$(VLAVIT) generate --model $(TINY) "a red ball rolls across the floor" --out $(DEMO_OUT)/generated.mp4 --seed 0
	$(VLAVIT) reconstruct --model $(TINY) $(DEMO_OUT)/sample.mp4 --out $(DEMO_OUT)/reconstructed.mp4 \
		--height 64 --width 112 --max-clips 1 --keyframe-steps 10 --video-steps 10

test: install-test
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_decompose.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
