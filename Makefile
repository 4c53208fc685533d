# The README's commands. Everything the project needs is installed here:
# Python packages into .venv from the checked-in lock (uv.lock, every package with its
# version and hashes), and (when missing) redis-server, Java and Maven from Debian's
# packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# uv itself, pinned by hash in uv-bootstrap.txt, lives in a venv of its own so that
# syncing .venv to the lock never removes it.
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
# Use this machine's Python; never download one. .venv is the environment uv syncs.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := $(strip \
	$(if $(shell command -v redis-server),,redis-server) \
	$(if $(shell command -v java),,openjdk-17-jre-headless) \
	$(if $(shell command -v mvn),,maven))

.PHONY: demo test test-chaos test-lowest lint lock lock-check typecheck pytest up down status \
	system-deps install help

help:
	@echo "make demo    install everything, then run the whole product on a stream of card payments"
	@echo "make up      start local Kafka (KRaft) and Redis, print their endpoints"
	@echo "make test    install everything, then ruff, mypy and pytest on real Kafka + Redis"
	@echo "make test-chaos  only the fault tests: kill -9 at every batch step, outages, rebalances"
	@echo "make test-lowest the unit tests on the lowest versions pyproject.toml allows (.venv-lowest)"
	@echo "make lock    re-resolve uv.lock to the newest versions pyproject.toml allows (review the diff)"
	@echo "make down    stop what 'make up' started"
	@echo "make status  show the local services"

test: install lock-check lint typecheck pytest test-lowest

# make demo ARGS="--events 20000 --keep"
demo: install
	$(BIN)/featurestore demo $(ARGS)

up: install
	$(BIN)/featurestore local up

down: install
	$(BIN)/featurestore local down

status: install
	$(BIN)/featurestore local status

install: system-deps $(VENV)/.installed

system-deps:
ifneq ($(APT_PACKAGES),)
	@command -v apt-get >/dev/null || { echo "missing: $(APT_PACKAGES); install them with your package manager (see README)"; exit 1; }
	@echo "installing Debian packages: $(APT_PACKAGES)"
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
endif

$(UV): uv-bootstrap.txt
	@[ -x $(UV_VENV)/bin/python ] || $(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
		-r uv-bootstrap.txt
	@touch $@

# Exactly the lock: every extra (the tests, the linters, the report's charts), the
# project itself editable. --locked fails when uv.lock no longer satisfies pyproject.toml.
$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --all-extras --python $(PYTHON) --quiet
	@echo "compiling the online lookup's and the decoder's kernels (numba, once per install)"
	$(BIN)/python -c 'from featurestore.features.small import warm; warm()'
	$(BIN)/python -c 'from featurestore.contracts.skim import warm; warm()'
	@touch $@

# Refresh the lock on purpose: the newest versions pyproject.toml allows. Commit uv.lock
# with the change that needed it, and review its diff like code.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# CI: the checked-in lock still satisfies pyproject.toml (it is not re-resolved).
lock-check: $(UV)
	$(UV) lock --check --python $(PYTHON)

# pyproject.toml's lower bounds, tested: the lowest versions of the direct dependencies
# it allows (their own dependencies as new as those allow), then the unit tests.
test-lowest: system-deps $(UV)
	@[ -x .venv-lowest/bin/python ] || $(UV) venv --quiet --python $(PYTHON) .venv-lowest
	VIRTUAL_ENV=.venv-lowest $(UV) pip install --quiet --resolution lowest-direct -e '.[test,dev]'
	.venv-lowest/bin/pytest -q -p no:cacheprovider -n 2 tests/unit $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The unit tests (no services, CPU-bound) on two workers, then the tests on real Kafka,
# Redis and S3 one at a time (they share the session's services and time their faults).
pytest: install
	$(BIN)/pytest -n 2 tests/unit
	$(BIN)/pytest --ignore=tests/unit

# The fault tests alone (they also run in `make test`, within its time budget).
test-chaos: install
	$(BIN)/pytest -m chaos $(ARGS)
