from __future__ import annotations

import pytest

from kemm.knowledge import build_pbk, build_reports
from kemm.knowledge.generate.prompts import PromptError, default_version, load_prompt, parse_prompt_file
from kemm.knowledge.store.cache import SourceCache
from fakes import write_reports_csv


def test_shipped_prompts_load_and_render():
    p = load_prompt("refine_report")
    assert p.version == 2 and p.schema_name == "RefinedReport" and len(p.sha256) == 64  # the highest
    assert load_prompt("refine_report", 1).version == 1  # v1 stays, unchanged, for its caches
    msgs = p.render(case_id="TCGA-AA-0001", cancer_type="BLCA", report_text="pT2 N0 urothelial carcinoma")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "<report>\npT2 N0 urothelial carcinoma\n</report>" in msgs[1]["content"]
    assert "DATA" in msgs[0]["content"] and "not reported" in msgs[1]["content"]
    k = load_prompt("pbk")
    assert "BLCA" in k.render(cancer_type="BLCA", cancer_name="bladder")[1]["content"]


def test_default_version_is_v1_for_rules_and_the_highest_for_llms(tmp_path):
    # rules ignores the prompt text; a new default would change the identity of every rules source
    assert default_version("refine_report", "rules") == 1 and default_version("pbk", "rules") == 1
    for backend in ("transformers", "vllm", "openai"):
        assert default_version("refine_report", backend) is None  # None = the highest
    _write(tmp_path, "{% block system %}s{% endblock %}{% block user %}u{% endblock %}")
    (tmp_path / "t" / "v1.jinja").rename(tmp_path / "t" / "v3.jinja")
    assert default_version("t", "rules", tmp_path) is None  # no v1 in a custom folder: the highest


def test_rules_sources_keep_prompt_v1_identity(tmp_path):
    f = tmp_path / "BLCA.csv"
    write_reports_csv(f, 2)
    build_reports(f, "r", backend="rules", cache_dir=tmp_path / "c", cancer_type="BLCA")
    build_pbk(["BLCA"], "p", backend="rules", cache_dir=tmp_path / "c")
    for src, task in (("r", "refine_report"), ("p", "pbk")):
        ident = SourceCache(tmp_path / "c", src).read_manifest()["identity"]
        assert ident["prompt_version"] == 1 and ident["prompt_sha"] == load_prompt(task, 1).sha256
    # an explicit version is honoured (a new source: the identity differs)
    build_reports(f, "r2", backend="rules", cache_dir=tmp_path / "c", cancer_type="BLCA", prompt_version=2)
    assert SourceCache(tmp_path / "c", "r2").read_manifest()["identity"]["prompt_version"] == 2


def test_missing_variable_is_a_clear_error():
    p = load_prompt("refine_report")
    with pytest.raises(PromptError, match="report_text"):
        p.render(case_id="x", cancer_type="BLCA")


def test_report_text_is_not_interpreted_as_template():
    p = load_prompt("refine_report")
    msgs = p.render(case_id="x", cancer_type="BLCA", report_text="{{ 7*7 }} {% if 1 %}x{% endif %}")
    assert "{{ 7*7 }}" in msgs[1]["content"]


def _write(tmp_path, body, front="name: t\nversion: 1\nschema: RefinedReport\ndescription: d\nsampling: {temperature: 0}\n"):
    d = tmp_path / "t"
    d.mkdir(exist_ok=True)
    f = d / "v1.jinja"
    f.write_text(f"---\n{front}---\n{body}")
    return f


def test_sandbox_blocks_attribute_escapes(tmp_path):
    f = _write(tmp_path, "{% block system %}{{ ''.__class__.__mro__[1].__subclasses__() }}{% endblock %}{% block user %}u{% endblock %}")
    with pytest.raises(PromptError, match="sandbox|unsafe|undefined"):
        parse_prompt_file(f).render()
    g = _write(tmp_path, "{% block system %}{{ cycler.__init__.__globals__.os }}{% endblock %}{% block user %}u{% endblock %}")
    with pytest.raises(PromptError):
        parse_prompt_file(g).render()


@pytest.mark.parametrize(
    "front,match",
    [
        ("name: t\nversion: 1\nschema: RefinedReport\nsampling: {}\n", "description"),
        ("name: t\nversion: one\nschema: RefinedReport\ndescription: d\nsampling: {}\n", "version"),
        ("name: t\nversion: 1\nschema: Nope\ndescription: d\nsampling: {}\n", "unknown schema"),
        ("name: t\nversion: 1\nschema: RefinedReport\ndescription: d\nsampling: 3\n", "sampling"),
        ("name: [t\n", "YAML"),
    ],
)
def test_front_matter_errors(tmp_path, front, match):
    f = _write(tmp_path, "{% block system %}s{% endblock %}{% block user %}u{% endblock %}", front)
    with pytest.raises(PromptError, match=match):
        parse_prompt_file(f)


def test_no_front_matter_and_syntax_error(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "v1.jinja").write_text("no front matter")
    with pytest.raises(PromptError, match="front matter"):
        parse_prompt_file(d / "v1.jinja")
    f = _write(tmp_path, "{% block system %}{{ x {% endblock %}")
    with pytest.raises(PromptError, match="syntax"):
        parse_prompt_file(f)


def test_version_mismatch_and_unknown_task(tmp_path):
    f = _write(tmp_path, "{% block system %}s{% endblock %}{% block user %}u{% endblock %}",
               "name: other\nversion: 1\nschema: RefinedReport\ndescription: d\nsampling: {}\n")
    with pytest.raises(PromptError, match="front matter says"):
        load_prompt("t", 1, tmp_path)
    with pytest.raises(PromptError, match="known tasks"):
        load_prompt("nope", None, tmp_path)
