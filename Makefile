# The README's commands. Everything the project needs is installed here:
# Python packages into .venv, and (when missing) redis-server, Java and Maven from
# Debian's packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := $(strip \
	$(if $(shell command -v redis-server),,redis-server) \
	$(if $(shell command -v java),,openjdk-17-jre-headless) \
	$(if $(shell command -v mvn),,maven))

.PHONY: demo test test-chaos lint typecheck pytest up down status system-deps install help

help:
	@echo "make demo    install everything, then run the whole product on a stream of card payments"
	@echo "make up      start local Kafka (KRaft) and Redis, print their endpoints"
	@echo "make test    install everything, then ruff, mypy and pytest on real Kafka + Redis"
	@echo "make test-chaos  only the fault tests: kill -9 at every batch step, outages, rebalances"
	@echo "make down    stop what 'make up' started"
	@echo "make status  show the local services"

test: install lint typecheck pytest

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

$(VENV)/.installed: pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

# The fault tests alone (they also run in `make test`, within its time budget).
test-chaos: install
	$(BIN)/pytest -m chaos $(ARGS)
