# npcd developer commands. `make run` and `make test` are all a fresh machine needs: each creates
# or updates the virtualenv in .venv/ and generates the protobuf code before doing its job.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/npcd/v1/*.proto)
# Generated next to the package so that protoc's own imports (`from npcd.v1 import npcd_pb2`)
# resolve; see proto/README.md for why the generated code is not committed.
PB2    := $(patsubst proto/%.proto,%_pb2.py,$(PROTOS))

ARGS ?=

.PHONY: all run test lint types unit fmt proto bench soak clean distclean system

all: $(STAMP) proto

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
	  || { echo "npcd needs Python 3.11 or newer as '$(PYTHON)' (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	@touch $@

proto: $(PB2)

npcd/v1/%_pb2.py: proto/npcd/v1/%.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto \
	  --python_out=. --grpc_python_out=. \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=. \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=. \
	  $<

# Starts the daemon with the sample characters on the embedded local backend.
run: all
	$(BIN)/npcd serve --characters characters $(ARGS)

# Debian packages the tests use: nginx, the proxy in front of `npcd serve --workers`.
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)
system:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  echo "installing nginx-light (the scale-out tests' proxy)"; \
	  $(SUDO) apt-get install -y -q nginx-light >/dev/null 2>&1 || { \
	    $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q nginx-light >/dev/null; }; }

# The whole suite: lint, types, then every test (what CI runs).
test: all system lint types
	$(BIN)/python -m pytest $(ARGS)

unit: all
	$(BIN)/python -m pytest tests/unit $(ARGS)

lint: all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: all
	$(BIN)/mypy

fmt: all
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (about 20 minutes, not part of `make test`): per-frame codec costs, event
# encode/decode, the speech engines, fault detection and recovery times, then `npcd bench`:
# npcd's added latency per frame against a direct WebSocket, the bare relay and Pipecat (its
# own venv, .venv-pipecat/, set up here; the relay table goes on without it if that install
# fails), capacity, voice to voice, start-up.
# Results: bench/results/*.json and summary.txt. Run it on an otherwise idle machine.
bench: all
	-bash bench/pipecat/setup.sh
	$(BIN)/python bench/audio_codec.py
	$(BIN)/python bench/hot_path.py
	$(BIN)/python -m tests.unit.test_events
	$(BIN)/python bench/speech_engines.py
	$(BIN)/python bench/lipsync.py
	$(BIN)/python bench/lipsync_latency.py
	$(BIN)/python bench/backend_latency.py
	$(BIN)/python bench/fault_recovery.py
	$(BIN)/python bench/memory.py
	$(BIN)/npcd bench --out bench/results
	# Voice to voice again with semantic_vad (the persona's own is server_vad), and with the
	# clips' longest pause stretched to 700 ms: how often a turn is ended too early.
	$(BIN)/python -m npcd.bench.voice --semantic auto --turns 9
	$(BIN)/python -m npcd.bench.voice --semantic auto --turns 9 --stretch-pause 700

clean:
	rm -f npcd/v1/*_pb2*.py npcd/v1/*_pb2*.pyi
	rm -rf .mypy_cache .ruff_cache .pytest_cache

distclean: clean
	rm -rf $(VENV) .venv-pipecat
