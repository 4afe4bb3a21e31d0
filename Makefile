# Quick start: `make demo` and `make test` work from a fresh clone (they create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
DEMO_OUT ?= demo-output

.PHONY: venv install install-test demo shapes-model test bench clean

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
SHAPES_MODEL := models/video-lavit-shapes
DEMO_WORLD := $(DEMO_OUT)/shapes-world
DEMO_VIDEO := $(DEMO_WORLD)/videos/test/test_000000.mp4
SHAPES_WORK ?= runs/shapes

# The main job on a fresh machine, no downloads: the trained Video-LaVIT-Shapes model (in this repository) on
# videos of its world that it never saw (a new seed): answer questions about one, generate a video from a
# prompt (MP4 + contact sheet), and show the tokenizers' round trip with its PSNR.
demo: install
	$(PY) datasets/make_shapes_world.py --out $(DEMO_WORLD) --num-videos 4 --size 64 --seed 7 \
		--test-fraction 1 --validation-fraction 0 --num-proc 1 --overwrite
	@$(PY) -c 'import json, sys; row = json.loads(open(sys.argv[1]).readline()); print("ground truth:", row["caption"])' \
		$(DEMO_WORLD)/metadata.jsonl
	$(VLAVIT) ask --model $(SHAPES_MODEL) $(DEMO_VIDEO) "What colour is the object?" "Which way does the object move first?" \
		--max-new-tokens 16
	$(VLAVIT) generate --model $(SHAPES_MODEL) "a red circle moves to the left" --out $(DEMO_OUT)/generated.mp4 \
		--sheet $(DEMO_OUT)/generated.png --seed 0
	$(VLAVIT) reconstruct --model $(SHAPES_MODEL) $(DEMO_VIDEO) --out $(DEMO_OUT)/reconstructed.mp4

# Train Video-LaVIT-Shapes from scratch with the project's own scripts (examples/recipes/train_shapes.py):
# every stage skips when its output exists, so an interrupted run resumes. Add RECIPE_ARGS="--device cuda" on a GPU.
shapes-model: install-test
	$(PY) examples/recipes/train_shapes.py --work-dir $(SHAPES_WORK) --out $(SHAPES_MODEL) $(RECIPE_ARGS)

test: install-test
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_decompose.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
