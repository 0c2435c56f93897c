# One-command entry points over a project virtual environment (.venv).
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test lint bench gpu-check clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

demo: setup  # train configs/demo.yaml, test on held-out faces, print the table, write the figure
	$(PY) -m tools.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) -m bench.scan

gpu-check: setup  # on a GPU machine: CUDA-only tests, backend agreement, scan times, training burst (<= 8 min)
	$(PY) -m bench.gpu_check

clean:
	rm -rf $(VENV) experiments .pytest_cache
