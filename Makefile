# The two commands: `make run` and `make test`. Both create .venv from the project's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

PROTOS := $(shell find proto -name '*.proto')
# descriptors.binpb: the contract with its comments, for server reflection (service/api/reflection.py).
PROTOC = $(PY) -m grpc_tools.protoc -Iproto --python_out=$(1) --grpc_python_out=$(1) \
	--mypy_out=$(1) --mypy_grpc_out=$(1) --include_source_info \
	--descriptor_set_out=$(1)/switchboard/v1/descriptors.binpb $(PROTOS)

.PHONY: run test lint typecheck proto proto-check bench lock clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

run: $(STAMP)
	$(BIN)/switchboard serve --config config/switchboard.yaml

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

## Re-pin requirements.lock after changing pyproject.toml dependencies.
lock: $(STAMP)
	$(BIN)/pip-compile -q --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
