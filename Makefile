# Every target creates .venv and installs into it what it needs: `make serve` and `make models` only
# what serving and training need (SERVE_STAMP), the others the development tools too (STAMP).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SERVE_STAMP := $(VENV)/.installed-serve
STAMP  := $(VENV)/.installed-dev
# ONNX Runtime for this host: the [gpu] extra (onnxruntime-gpu) where an NVIDIA driver answers, else [cpu].
ORT    ?= $(if $(shell command -v nvidia-smi 2>/dev/null),gpu,cpu)
$(if $(filter cpu gpu,$(ORT)),,$(error ORT must be cpu or gpu (the extra that brings ONNX Runtime), not '$(ORT)'))
OTHER_ORT := $(if $(filter gpu,$(ORT)),onnxruntime,onnxruntime-gpu)
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs torch and torchvision from that index first
# (PyTorch's CPU-only wheels, no CUDA libraries); unset, the configured package index decides (README).
TORCH_INDEX ?=
# The recipes run the venv's tools (zoo, bentoml, kubectl) before any others on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
# checkov pins ~40 packages (packaging<24 among them, which would hold pytest back): its own venv.
SCAN_VENV  := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed
# KServe's SDK pins protobuf<7 (the service's gRPC stubs need 7): its own venv for tests/test_grpc.py.
KSERVE_VENV  := .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed
PORT   ?= 3000

# Datasets: every command applies zoo/datadir.py's rule ($DATA_DIR, else ../shared/data, else ./data).

.PHONY: help install chromium wrk test-tools serve test models bench bench-goodput container-test clean protos

help:
	@echo "make serve           serve all available models on localhost:$(PORT) (PORT=N for another; trains quick models if missing)"
	@echo "make test            run the whole test suite"
	@echo "make models          train (full recipes), export and register every family whose data is present"
	@echo "make bench           run the benchmarks and write docs/benchmarks.md"
	@echo "make bench-goodput   goodput at twice capacity with clients giving up after 100 ms (docs/bench/goodput.json)"
	@echo "make container-test  build the OCI image, run it and check its answers"
	@echo "make clean           remove the venv, build outputs and caches"
	@echo "variables            PORT=3000, ORT=cpu|gpu (default: gpu where nvidia-smi answers), TORCH_INDEX=URL (README)"

install: $(STAMP) $(SCAN_STAMP) $(KSERVE_STAMP) test-tools

# The two ONNX Runtime wheels share one import package: the other one goes first, both together.
$(SERVE_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install -q torch torchvision --index-url $(TORCH_INDEX))
	@! $(BIN)/python -m pip show -q $(OTHER_ORT) 2>/dev/null || $(BIN)/python -m pip uninstall -q -y onnxruntime onnxruntime-gpu
	$(BIN)/python -m pip install -q -e '.[$(ORT)]'
	@touch $@

$(STAMP): $(SERVE_STAMP)
	$(BIN)/python -m pip install -q -e '.[$(ORT),dev]'
	@touch $@

$(KSERVE_STAMP): tests/kserve/requirements.txt
	@test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install -q -r tests/kserve/requirements.txt
	@touch $@

$(SCAN_STAMP): deploy/k8s/requirements-scan.txt
	@test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install -q -r deploy/k8s/requirements-scan.txt
	@touch $@

# $(call debs,COMMAND:PACKAGE ...): install, in one apt-get call, the Debian packages whose command is missing.
debs = @missing=$$(for t in $(1); do command -v $$(echo $$t | cut -d: -f1) >/dev/null || echo $$t | cut -d: -f2; done); \
	[ -z "$$missing" ] || { SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }

# tests/test_ui.py drives the browser demo in headless Chromium with its chromedriver; the benchmarks'
# load generators are wrk and h2load (benchmarks/tests/test_commands.py, test_grpc_bench.py run them). kubectl comes with [dev] (.venv/bin).
chromium:
	$(call debs,chromium:chromium chromedriver:chromium-driver)
wrk:
	$(call debs,wrk:wrk h2load:nghttp2-client)
test-tools:
	$(call debs,chromium:chromium chromedriver:chromium-driver wrk:wrk h2load:nghttp2-client)

# service.serve: a busy PORT is one line (checked before training too); "ready" and the examples come
# after /readyz answers; Ctrl-C stops it.
serve: $(SERVE_STAMP)
	@$(BIN)/python -m service.serve --port $(PORT) --check-port
	$(BIN)/python -m export.bootstrap --quick
	@$(BIN)/python -m service.serve --port $(PORT)

test: $(STAMP) $(SCAN_STAMP) $(KSERVE_STAMP) test-tools
	CHECKOV=$(abspath $(SCAN_VENV))/bin/checkov $(BIN)/python -m pytest

models: $(SERVE_STAMP)
	$(BIN)/python -m export.bootstrap --full

bench: $(STAMP) wrk
	$(BIN)/python -m benchmarks.run

bench-goodput: $(STAMP)
	$(BIN)/python -m benchmarks.goodput --out docs/bench/goodput.json

container-test: $(STAMP)
	bash scripts/container_test.sh

# the gRPC stubs beside service/grpc/protos/grpc_service.proto (committed; rerun after editing the proto)
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. service/grpc/protos/grpc_service.proto

clean:
	rm -rf $(VENV) $(SCAN_VENV) $(KSERVE_VENV) build dist *.egg-info runs checkpoints artifacts .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
