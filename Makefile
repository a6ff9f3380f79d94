# Every target runs inside the project environment through ./dev, which builds it on
# first use (a native venv, or a Debian 13 root filesystem under bubblewrap).
SHELL := /bin/bash
DEV := ./dev
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` and `make test-all` (0: one process). Each test file runs
# whole on one worker, the longest first (pytest.ini, tests/conftest.py).
TEST_WORKERS ?= 2
CONFIG ?= pipeline/configs/demo.yaml
LM_CONFIG ?= pipeline/configs/demo_lm.yaml
SCRATCH_CONFIG ?= pipeline/configs/demo_scratch.yaml
COMPRESS_CONFIG ?= pipeline/configs/demo_compress.yaml
OUTPUTS ?= pipeline_outputs
PORT ?= 8500
REST_PORT ?= 8501
PIPELINE ?= demo
MODEL_NAME ?= sentiment
KFP_HOST ?=
KFP_PIPELINE_ROOT ?=
KFP_EXPERIMENT ?= tfx-lm
# A value as one shell word, in single quotes: a path with spaces or quotes stays one argument
# (make's $(abspath) would split it into words, so the shell makes the outputs path absolute).
q = '$(subst ','\'',$(1))'
ABS_OUTPUTS = "$$(realpath -ms -- $(call q,$(OUTPUTS)))"
KFP_ARGS = $(if $(KFP_PIPELINE_ROOT),--set $(call q,kubeflow.pipeline_root=$(KFP_PIPELINE_ROOT)))

.PHONY: help env test test-all lint demo demo-scratch demo-compress demo-lm tensorboard serve bench lock clean clean-env kubeflow-compile kubeflow-submit

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

env:  ## Build (or reuse) the environment and say which one it is.
	@python3 tools/runtime.py ensure

test:  ## Run the test suite (the default set, end-to-end pipeline included).
	$(DEV) python -m pytest -q -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS) tests

test-all:  ## Run every test, slow ones too.
	$(DEV) python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS) tests

lint:  ## Check the code with ruff: lint rules and formatting (ruff format to fix the latter).
	$(DEV) ruff check .
	$(DEV) ruff format --check .

demo:  ## Fine-tune all-MiniLM-L6-v2 on Rotten Tomatoes vs a TF-IDF baseline (CONFIG=your.yaml).
	TFXLM_OUTPUTS=$(ABS_OUTPUTS) $(DEV) python -m pipeline.local_runner --config $(call q,$(CONFIG))

demo-scratch:  ## The same classifier as a tiny BERT trained from scratch.
	TFXLM_OUTPUTS=$(ABS_OUTPUTS) $(DEV) python -m pipeline.local_runner --config $(call q,$(SCRATCH_CONFIG))

demo-compress:  ## The demo's model pushed int8-quantized, and a tiny BERT distilled from it.
	TFXLM_OUTPUTS=$(ABS_OUTPUTS) $(DEV) python -m pipeline.local_runner --config $(call q,$(COMPRESS_CONFIG))

demo-lm:  ## A small GPT on the same text: perplexity vs unigram, sample generations.
	TFXLM_OUTPUTS=$(ABS_OUTPUTS) $(DEV) python -m pipeline.local_runner --config $(call q,$(LM_CONFIG))

tensorboard:  ## Serve TensorBoard over the pipeline outputs.
	$(DEV) tensorboard --logdir $(call q,$(OUTPUTS)) --host 127.0.0.1 --port 6006

serve:  ## Serve the model the demo pushed (gRPC :8500, REST :8501; MODEL_NAME, PIPELINE).
	$(DEV) python -m serving --model_name=$(call q,$(MODEL_NAME)) --model_base_path=$(ABS_OUTPUTS)/$(call q,$(PIPELINE)/serving/$(MODEL_NAME)) --port=$(call q,$(PORT)) --rest_api_port=$(call q,$(REST_PORT))

kubeflow-compile:  ## Compile the pipeline (CONFIG) to a KFP v2 spec: KFP_PIPELINE_ROOT=gs://...
	$(DEV) python -m pipeline.kubeflow_runner compile --config $(call q,$(CONFIG)) $(KFP_ARGS)

kubeflow-submit:  ## Compile and submit to a KFP 2 endpoint: make kubeflow-submit KFP_HOST=http://...
	@test -n $(call q,$(KFP_HOST)) || { echo "error: set KFP_HOST, e.g. make kubeflow-submit KFP_HOST=http://localhost:8080"; exit 2; }
	$(DEV) python -m pipeline.kubeflow_runner submit --config $(call q,$(CONFIG)) $(KFP_ARGS) --host $(call q,$(KFP_HOST)) --experiment $(call q,$(KFP_EXPERIMENT))

bench:  ## Run the benchmarks and print their ratios.
	$(DEV) python bench/run_all.py

lock:  ## Re-resolve the stack from setup.py; rewrite requirements.lock and requirements-gpu.lock.
	$(DEV) bash tools/relock.sh

clean:  ## Remove pipeline outputs and caches in this clone.
	rm -rf -- $(call q,$(OUTPUTS)) .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

clean-env:  ## Remove every cached environment (they rebuild on next use).
	python3 tools/runtime.py clean
