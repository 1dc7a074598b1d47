# Two commands: `make run` (set up, then run the quick search on the embedded default)
# and `make test` (set up, then run the whole test suite, PostgreSQL half included).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# a local CPU wheel of torch, when the machine has one (avoids a multi-GB CUDA download)
TORCH_LINKS := $(if $(wildcard /opt/wheels/torch-*.whl),--find-links /opt/wheels,)
SPEC ?= search_spaces/examples/quick_rotmnist.yaml
PYTEST_ARGS ?=

.PHONY: setup run test lint system-deps clean

setup: $(STAMP)

system-deps:
	scripts/install_system_deps.sh

$(STAMP): pyproject.toml scripts/install_system_deps.sh
	scripts/install_system_deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel setuptools
	$(BIN)/pip install -q "torch==2.13.0" $(TORCH_LINKS) || $(BIN)/pip install -q "torch>=2.2,<2.14" --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/relaxtune run $(SPEC)

# Tests that need something missing here fail instead of skipping (tests/conftest.py). Mounting
# a tmpfs needs root with CAP_SYS_ADMIN: elsewhere run `make test REQUIRE_TMPFS=0`.
REQUIRE_TMPFS ?= 1
# The suite runs on TEST_WORKERS pytest processes (pytest-xdist), each test file whole on one
# process (--dist loadfile), the files with slow tests handed out first (tests/conftest.py),
# then the few files marked one_process alone in one process (pyproject.toml says why a file
# is). TEST_WORKERS=1 runs everything in one process, in pytest's order.
TEST_WORKERS ?= 2

TEST_ENV := RELAXTUNE_TEST_REQUIRE_PG=1 RELAXTUNE_TEST_REQUIRE_COMPOSE=1 RELAXTUNE_TEST_REQUIRE_CHROMIUM=1 RELAXTUNE_TEST_REQUIRE_TMPFS=$(REQUIRE_TMPFS) RELAXTUNE_TEST_REQUIRE_PYPI=1

test: $(STAMP)
	scripts/ensure_postgres.sh
ifeq ($(TEST_WORKERS),1)
	$(TEST_ENV) $(BIN)/python -m pytest -ra $(PYTEST_ARGS)
else
	$(TEST_ENV) $(BIN)/python -m pytest -ra -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not one_process" $(PYTEST_ARGS)
	$(TEST_ENV) $(BIN)/python -m pytest -ra -m one_process $(PYTEST_ARGS)
endif

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
