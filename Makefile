# dtma: `make run` runs the agent, `make test` runs the tests. Both set up everything they need.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# pytest-xdist workers for `make test`: 2 (the default) spreads the test files over two worker
# processes; TEST_WORKERS=0 runs them in this process, one after another (about 37 minutes on
# 2 cores: docs/testing.md).
TEST_WORKERS ?= 2

.PHONY: help venv docker images run test test-unit lint fmt clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: ## create .venv and install dtma with its test and dev extras (idempotent)
	@scripts/ensure-venv

docker: ## make sure a Docker engine answers (as root on Debian: installs docker.io, starts dockerd)
	@scripts/ensure-docker

images: venv ## build dtma-examples/mcp-time, mcp-notes, mcp-kit and dtma/agent (cached)
	@scripts/build-images

run: venv ## run the agent on 127.0.0.1:8750 (state in .dtma/, dev OpenBao unless VAULT_ADDR is set)
	@scripts/build-images mcp-time mcp-notes
	@$(PY) scripts/run_dev.py

test: venv ## run the whole suite against the real Docker engine, OpenBao and MCP servers
	@scripts/ensure-tools
	@scripts/build-images
	@$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

test-unit: venv ## run only the unit tests (no Docker needed)
	@$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

lint: venv ## ruff check, ruff format --check, mypy --strict on dtma/
	$(VENV)/bin/ruff check dtma tests images scripts
	$(VENV)/bin/ruff format --check dtma tests images scripts
	$(VENV)/bin/mypy

fmt: venv ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix dtma tests images scripts
	$(VENV)/bin/ruff format dtma tests images scripts

clean: ## remove the venv, caches and local state (.dtma/); images are kept
	rm -rf $(VENV) .dtma .mypy_cache .ruff_cache .pytest_cache images/*/wheels
