# The README's two commands are `make demo` and `make test`; both do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP := bash scripts/setup_env.sh
export PYTHONWARNINGS ?= ignore::UserWarning:pyworld

.PHONY: setup test lint format demo bench space clean

setup:
	@$(SETUP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q tests

demo: setup
	$(PY) scripts/make_demo_corpus.py --output_dir data/demo --num_speakers 12 --sentences_per_speaker 10
	ACCELERATE_USE_CPU=$${ACCELERATE_USE_CPU:-1} $(VENV)/bin/accelerate launch --num_processes 1 \
		scripts/train.py configs/demo.json --overwrite_output_dir

bench: setup
	$(PY) benchmarks/run_all.py

space: setup
	MODEL_ID=$${MODEL_ID:-outputs/demo} $(PY) spaces/app.py

clean:
	rm -rf outputs runs .pytest_cache .ruff_cache
