# The two commands: `make run` and `make test`. Both create .venv from the project's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# Two stamps: the runtime (requirements.lock: what `make run` and the image need) and the
# dev tools on top of it (requirements-dev.lock: what `make test` needs).
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

PROTOS := $(shell find proto -name '*.proto')
# descriptors.binpb: the contract with its comments, for server reflection (service/api/reflection.py).
PROTOC = $(PY) -m grpc_tools.protoc -Iproto --python_out=$(1) --grpc_python_out=$(1) \
	--mypy_out=$(1) --mypy_grpc_out=$(1) --include_source_info \
	--descriptor_set_out=$(1)/switchboard/v1/descriptors.binpb $(PROTOS)

.PHONY: run dev test lint typecheck proto proto-check bench lock clean

$(RUNTIME): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(STAMP): $(RUNTIME) requirements-dev.lock
	$(PY) -m pip install -q -r requirements-dev.lock
	touch $@

## Serve config/switchboard.yaml. Move the ports with `make run PORT=6000 HTTP_PORT=6080
## METRICS_PORT=6464` (the config's server.port, server.http.port and
## observability.metrics.port, through their SWITCHBOARD_… overrides).
PORTS = $(strip $(if $(PORT),SWITCHBOARD_SERVER__PORT=$(PORT)) \
	$(if $(HTTP_PORT),SWITCHBOARD_SERVER__HTTP__PORT=$(HTTP_PORT)) \
	$(if $(METRICS_PORT),SWITCHBOARD_OBSERVABILITY__METRICS__PORT=$(METRICS_PORT)))
run: $(RUNTIME)
	$(PORTS) $(BIN)/switchboard serve --config config/switchboard.yaml

## The dev tools (grpcurl, pytest, mypy, ruff…) in .venv, without running anything.
dev: $(STAMP)

test: $(STAMP) lint typecheck proto-check
	$(PY) -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code
	# The contract is released: nothing may break switchboard.v1 as main has it.
	if git rev-parse -q --verify main >/dev/null; then \
		$(BIN)/buf breaking --against '.git#branch=main'; fi

typecheck: $(STAMP)
	$(BIN)/mypy

## Regenerate the stubs in generated/ from proto/.
proto: $(STAMP)
	$(call PROTOC,generated)

## Fail when generated/ is not what proto/ generates.
proto-check: $(STAMP)
	rm -rf $(VENV)/proto-check && mkdir -p $(VENV)/proto-check/switchboard/v1
	$(call PROTOC,$(VENV)/proto-check)
	diff -r -x __init__.py -x __pycache__ $(VENV)/proto-check/switchboard generated/switchboard

bench: $(STAMP)
	$(PY) bench/bench.py

## Re-pin both locks after changing pyproject.toml dependencies: the runtime first, then the
## dev tools constrained to it (so both install the same versions of what they share).
LOCK_FLAGS := -q --strip-extras --no-emit-index-url --no-emit-find-links
lock: $(STAMP)
	$(BIN)/pip-compile $(LOCK_FLAGS) -o requirements.lock pyproject.toml
	$(BIN)/pip-compile $(LOCK_FLAGS) --extra dev -c requirements.lock \
		-o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
