# Two commands: `make run` (the pipeline on the shipped data) and `make test`.
# Both create .venv with a Python 3.10/3.9 found on this machine (PATH or
# pyenv) and install the locked working set into it first.

SHELL := /bin/bash
# TFX 1.16 needs Keras 2: every process must start with this set.
export TF_USE_LEGACY_KERAS := 1

VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast test-examples lint venv lock bench clean help protos

help:
	@echo "make run    - run the whole pipeline locally (ARGS='--verbose' etc.)"
	@echo "make test   - run the test suite"
	@echo "make lint   - ruff, as CI runs it before the tests"
	@echo "make test-fast - the tests not marked slow (about 9 minutes on 2 cores)"
	@echo "make test-examples - the fast tests again with each other shipped example selected"
	@echo "make bench  - time a cold and a cached pipeline run"
	@echo "make clean  - remove pipeline outputs and pushed models"

venv: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt requirements.lock setup.py
	@set -e; \
	if [ ! -x $(PY) ]; then \
	  python=$$(scripts/find_python.sh); \
	  echo "Creating $(VENV) with $$python"; \
	  $$python -m venv $(VENV); \
	fi; \
	echo "Installing the locked dependencies into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"; \
	if ! { $(PY) -m pip install -r requirements.txt -r requirements-dev.txt -c requirements.lock && \
	       $(PY) -m pip install --no-deps -e .; } > $(VENV)/install.log 2>&1; then \
	  tail -20 $(VENV)/install.log; echo "Install failed: see $(VENV)/install.log"; exit 1; \
	fi
	@touch $(INSTALLED)

run: $(INSTALLED)
	$(PY) local_runner.py $(ARGS)

test: $(INSTALLED)
	@scripts/ensure_debian_tool.sh chromium "the report tests" chromium chromium-browser google-chrome
	@scripts/ensure_debian_tool.sh prometheus "the dashboard tests (promtool)" promtool
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

test-fast: $(INSTALLED)
	$(PY) -m pytest tests -m 'not slow' $(PYTEST_ARGS)

# The suite is written against the selected example's description, not the
# taxi columns: the fast part must pass with every shipped example.
OTHER_EXAMPLES ?= iris diabetes
test-examples: $(INSTALLED)
	@set -e; for example in $(OTHER_EXAMPLES); do \
	  echo "== the fast tests with TAXI_EXAMPLE=$$example"; \
	  TAXI_EXAMPLE=$$example $(PY) -m pytest tests -m 'not slow' $(PYTEST_ARGS); \
	done

bench: $(INSTALLED)
	$(PY) bench/pipeline_bench.py

# Re-pins requirements.lock from a fresh resolve of requirements.txt.
lock:
	rm -rf .venv-lock && $$(scripts/find_python.sh) -m venv .venv-lock
	.venv-lock/bin/pip install -q -r requirements.txt -r requirements-dev.txt -c requirements.lock
	{ head -2 requirements.lock; .venv-lock/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

clean:
	rm -rf tfx_output serving_model

include deploy.mk

# The config protos the tensorflow-serving-api wheel lacks (serving/config_protos/):
# generated with grpcio-tools 1.48.2 in a throwaway venv (its protoc output runs
# under the pinned protobuf 3.20.3; installing grpcio-tools into .venv would
# upgrade protobuf). The generated modules are checked in.
PROTO_VENV ?= /tmp/serving-protoc-venv
protos:
	@set -e; \
	if [ ! -x $(PROTO_VENV)/bin/python ]; then \
	  python=$$(scripts/find_python.sh); \
	  $$python -m venv $(PROTO_VENV); \
	  $(PROTO_VENV)/bin/pip install -q grpcio-tools==1.48.2; \
	fi; \
	$(PROTO_VENV)/bin/python -m grpc_tools.protoc -I. --python_out=. serving/config_protos/*.proto
