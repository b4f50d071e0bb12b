# Two commands for a fresh machine with only python3:
#   make demo   build the built-in corpora and train the smallest model (CPU, minutes)
#   make test   run the test suite
# Each creates or reuses .venv and installs what it needs.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WORKDIR ?= runs/demo
DEMO_ARGS ?=
# Two workers, one test file each at a time (--dist loadfile): a file's module
# fixtures and jit caches are built once, not once per worker; tests/conftest.py
# puts the slowest files first so that the workers finish together.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: demo test lint clean

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed-core: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

# f5-tts (the F5-TTS parity reference) without its trainer / UI dependency set: its
# model code needs only torch, x-transformers and torchdiffeq, which the extra has.
$(VENV)/.installed-test: $(VENV)/.installed-core
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps f5-tts==1.1.22
	@touch $@

demo: $(VENV)/.installed-core
	$(BIN)/python train/demo.py --workdir $(WORKDIR) $(DEMO_ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
