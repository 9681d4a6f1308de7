# Everything a developer runs. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/eventmgmt/v1/*.proto)
THIRD_PARTY := build/third_party

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Debian's python3 lacks the venv module unless python3-venv is installed: fall back to
# virtualenv from PyPI, so that a machine with only python3, pip and make works.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  python3 -m pip install --quiet --user virtualenv && python3 -m virtualenv --quiet $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create or refresh the virtual environment with everything installed.

.PHONY: run
run: $(STAMP) ## Run the gRPC server and the Envoy REST gateway on ./data/eventmgmt.db.
	$(VENV)/bin/eventmgmt serve

.PHONY: test
test: $(STAMP) ## Run the test suite (PostgreSQL tests need EVENTMGMT_TEST_POSTGRES_URL).
	$(VENV)/bin/pytest

$(THIRD_PARTY): $(STAMP)
	$(PY) -m service.protogen third-party $(THIRD_PARTY)

.PHONY: generate
generate: $(STAMP) ## Regenerate service/v1 and gateway/openapi.json from protos/.
	$(PY) -m service.protogen python

.PHONY: checkgenerate
checkgenerate: $(STAMP) ## Fail when service/v1 or gateway/openapi.json is stale.
	$(PY) -m service.protogen check

.PHONY: lint
lint: $(STAMP) $(THIRD_PARTY) checkgenerate ## ruff, mypy, pyright, buf lint, buf breaking against main.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy service persistence gateway
	$(VENV)/bin/basedpyright
	$(VENV)/bin/buf lint
	@# buf cannot read the googleapis module out of git (it is copied, not committed), so
	@# main's protos are unpacked beside a copy of it and compared as a directory.
	@if git cat-file -e main:buf.yaml 2>/dev/null; then \
	  rm -rf build/against && mkdir -p build/against && \
	  git archive main buf.yaml protos | tar -x -C build/against && \
	  mkdir -p build/against/build && cp -r $(THIRD_PARTY) build/against/build/ && \
	  $(VENV)/bin/buf breaking --against build/against && echo "buf breaking: none against main"; \
	else echo "buf breaking: no buf.yaml on main yet, nothing to compare"; fi

# The unary rates are driven by C load generators (h2load for gRPC, wrk for REST through
# Envoy), so that the client does not share the server's interpreter and cores.
.PHONY: bench-tools
bench-tools: ## Install h2load, wrk and valgrind (Debian nghttp2-client, wrk, valgrind) when missing.
	@command -v h2load >/dev/null && command -v wrk >/dev/null && command -v valgrind >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q nghttp2-client wrk valgrind || \
	      { apt-get update -q && apt-get install -y -q nghttp2-client wrk valgrind; }; \
	  else echo "make bench needs h2load, wrk and valgrind: sudo apt-get install nghttp2-client wrk valgrind" >&2; \
	    exit 1; fi; }

# The scripts and their order are listed once, in tests/benchmarks/figures.py, which runs them
# and ends with one table of issue 15's figures, each beside its target.
.PHONY: bench
bench: $(STAMP) bench-tools ## Unary rates against Health/Check, workers, jobs, find, live, list, memory: one table.
	$(PY) tests/benchmarks/figures.py run

.PHONY: clean
clean: ## Remove the virtual environment, build output and local data.
	rm -rf $(VENV) build data
