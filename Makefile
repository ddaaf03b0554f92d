# Quick start: `make demo` (the main job) and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test test-torchrun test-bundle test-slow lint format clean bench bench-speed bench-attention bench-accuracy bench-e2e bench-ct

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[data]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,data]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/attnseg demo --overwrite

# Benchmarks: each part prints Markdown tables (date, machine, versions, medians, same-run ratios);
# docs/benchmarks.md holds the latest. `make bench` runs the parts one after the other (never in
# parallel: they time things). A new part is a target below, appended to BENCH_PARTS.
BENCH_PARTS := bench-speed bench-attention bench-accuracy bench-e2e bench-ct

bench:
	@for part in $(BENCH_PARTS); do $(MAKE) --no-print-directory $$part || exit 1; done

# (a) network speed and memory vs MONAI AttentionUnet and UNet at equal widths, 2D and 3D (+ a GPU table)
bench-speed: $(VENV)/.installed
	$(BIN)/python -m benchmarks.network_speed
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(BIN)/python -m benchmarks.network_speed --device cuda; fi

# (b) position attention, naive vs memory-efficient, at 32^2, 64^2, 128^2
bench-attention: $(VENV)/.installed
	$(BIN)/python -m benchmarks.position_attention

# (c) accuracy at equal steps (240) and for an equal time budget (5m): 3 U-Nets and 3 multi-scale presets, 3 seeds,
# mni152-tissue and ctchest as 2D slices (many hours on 2 cores: see docs/benchmarks.md for the parts)
bench-accuracy: $(VENV)/.installed
	$(BIN)/python -m benchmarks.accuracy_budget

# (d) end to end: `attnseg demo`, and predicting a 256 x 256 x 160 volume
bench-e2e: $(VENV)/.installed
	$(BIN)/python -m benchmarks.end_to_end
	$(BIN)/python -m benchmarks.predict_speed

# (e) a CT of clinical size (512 x 512 x 300): predict (and --tta) and evaluate --sides, time and peak memory
# against the code of BASELINE (default e62135e, before the CT memory work), outputs compared bit for bit
bench-ct: $(VENV)/.installed
	$(BIN)/python -m benchmarks.ct_scale --baseline-ref $(or $(BASELINE),e62135e)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The torchrun training of a tiny model 5 times, each watched by its heartbeat (~2 min); .ci/run runs it
# after `make test`. `make test-slow` has the 20 runs.
test-torchrun: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m torchrun

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m slow

# The MONAI Bundle run in a fresh environment without attnseg (built once, cached in the temp folder)
test-bundle: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m bundle tests/inference/test_bundle.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
