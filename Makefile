# make demo: set up a local virtual environment and run the whole pipeline on the built-in corpus.
# make test: set up the same environment, lint (ruff, configured in pyproject.toml) and run the test suite
# (what .ci/run calls).
#
# TORCH picks the PyTorch build. The default pins the release this project is tested with; on Linux
# PyPI serves it with CUDA. For a specific CUDA or a CPU-only build:
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu126"
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo
DEMO_TASKS ?= data/demo-tasks

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The built-in corpus is small (about 1M tokens), so the demo keeps 2% of it for validation. It trains the
# recommended recipe (demo_modern), scores two small tasks made from the held-out documents at every
# evaluation, and ends with the run's report card (runs/demo/report/report.md) and a sample.
demo: setup
	$(PY) -m preprocess --out $(DEMO_DATA) --vocab-size 8192 --val-fraction 0.02
	$(PY) tools/inspect_shards.py summary $(DEMO_DATA)
	$(PY) tools/make_tasks.py $(DEMO_DATA) --out $(DEMO_TASKS)
	$(PY) -m train --data $(DEMO_DATA) --out $(DEMO_RUN) --config demo_modern \
		--set training.eval_tasks=$(DEMO_TASKS)/next_words.jsonl,$(DEMO_TASKS)/last_word.jsonl \
		--set "training.sample_prompts=The built-in function,A list is,To read a file"
	$(PY) tools/report.py $(DEMO_RUN) --data $(DEMO_DATA)
	$(PY) -m train.generate $(DEMO_RUN) --prompt "The built-in function" --max-new-tokens 80 --min-new-tokens 40 \
		--temperature 0.8 --top-k 40 --seed 0

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_TASKS) $(DEMO_RUN)
