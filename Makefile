# Set-up on a fresh machine needs only Python 3.11 and pip: every target creates .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# DeepSpeed: no ops pre-built at install time; its JIT-compiled C++ ops are cached here.
export DS_BUILD_OPS := 0
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE := 1
PYTEST_ARGS ?=

.PHONY: install test lint quickstart clean

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/lock.txt -e '.[dev]'
	@mkdir -p $(TORCH_EXTENSIONS_DIR)
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite. pytest exits 5 when it collects nothing: that is a failure, said out loud.
test: lint
	@set +e; $(BIN)/python -m pytest -ra $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; fi; \
	exit $$rc

# The main job: toy world -> pairuni pair -> SFT warm start -> Pair-GRPO on a local Ray
# cluster, with held-out accuracy / toy-judge reward before and after RL (runs/quickstart/).
quickstart: install
	$(BIN)/pairuni quickstart --config deploy/configs/quickstart.yaml

clean:
	rm -rf runs .cache .pytest_cache .ruff_cache
