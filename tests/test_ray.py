"""``--executor ray`` on a local two-CPU Ray cluster: the training sweep and knowledge generation
give what the serial paths give, and both resume (issue 15).

Skipped only where ``ray`` is not importable (it is in the ``dev`` extra, so CI runs these).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fakes import VALID_REPORT, AttemptScriptedBackend, write_reports_csv
from kemm.knowledge import api
from kemm.knowledge.generate.backends.replicas import RayReplicas
from kemm.knowledge.generate.build import build
from kemm.knowledge.generate.prompts import load_prompt
from kemm.knowledge.store.cache import SourceCache
from kemm.knowledge.store.inputs import read_reports
from kemm.model.data.synthetic import make_synthetic_cohort, truth_knowledge
from kemm.model.errors import DataError
from kemm.model.run.config import dump_config, parse_config
from kemm.model.run.executor import run_on_ray
from kemm.model.run.train import run_experiment

ray = pytest.importorskip("ray", reason="ray is not importable: pip install 'kemm[ray]' (the dev extra installs it)")

ROOT = Path(__file__).resolve().parents[1]
HP = {"dim": 32, "dropout": 0.1}


@pytest.fixture(scope="module")
def cluster():
    """A local cluster for the module; its workers import kemm and the test helpers from this checkout."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), *([old] if old else [])])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


# -- the training sweep ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic_cohort(tmp_path_factory.mktemp("syn"), n_patients=120, seed=0, patches=(20, 40), wsi_dim=16)


def _cfg(syn, out, models):
    return parse_config({
        "name": "t", "output_dir": str(out),
        "data": {"cohort": str(syn.cohort_csv), "features_dir": str(syn.features_dir), "n_folds": 3,
                 "genomics": {"groups": "signatures", "signatures": str(syn.signatures_csv)}, "clinical": ["age", "sex"]},
        "models": [{"name": m, "hparams": {} if m == "coxph" else HP} for m in models],
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "num_threads": 1},
    })


EXPERIMENTS = {"a": ["kemm", "snn"], "b": ["coxph", "abmil"]}


@pytest.fixture(scope="module")
def serial_runs(syn, tmp_path_factory):
    rep, pbk = truth_knowledge(syn)
    out = tmp_path_factory.mktemp("serial")
    return {name: run_experiment(_cfg(syn, out / name, models), report=rep, pbk=pbk) for name, models in EXPERIMENTS.items()}


def _drop_seconds(obj):
    if isinstance(obj, dict):
        return {k: _drop_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_drop_seconds(v) for v in obj]
    return obj


def _tensors_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def assert_same_run(serial: Path, other: Path) -> None:
    """Every file of the serial run, equal in ``other`` up to the run's own path and fold timings.

    model.pt is compared by content: torch.save names its zip archive after the (temporary) file name.
    """
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for rel in files:
        a, b = serial / rel, other / rel
        if rel.suffix == ".png":
            continue
        if rel.suffix == ".pt":
            assert _tensors_equal(torch.load(a, weights_only=True), torch.load(b, weights_only=True)), rel
            continue
        ta, tb = a.read_text().replace(str(serial), "<run>"), b.read_text().replace(str(other), "<run>")
        if rel.suffix == ".json":
            assert _drop_seconds(json.loads(ta)) == _drop_seconds(json.loads(tb)), rel
        else:
            assert ta == tb, rel


def test_sweep_of_two_experiments_equals_serial(cluster, syn, serial_runs, tmp_path):
    rep, pbk = truth_knowledge(syn)
    res = run_on_ray([_cfg(syn, tmp_path / n, m) for n, m in EXPERIMENTS.items()], report=rep, pbk=pbk)
    assert res.run_dirs == [tmp_path / n for n in EXPERIMENTS] and all(s > 0 for s in res.seconds)
    for name in EXPERIMENTS:
        assert_same_run(serial_runs[name], tmp_path / name)
        assert json.loads((tmp_path / name / "run.json").read_text())["status"] == "done"


def test_interrupted_serial_run_resumes_on_ray_at_the_same_folds(cluster, syn, serial_runs, tmp_path):
    rep, pbk = truth_knowledge(syn)
    cfg = _cfg(syn, tmp_path / "a", EXPERIMENTS["a"])

    def stop(model, k, rec):
        if (model, k) == ("snn", 0):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, report=rep, pbk=pbk, on_fold_done=stop)
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "folds").glob("*/*/metrics.json")}
    assert len(done) == 2
    run_on_ray([cfg], report=rep, pbk=pbk)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished folds were not run again
    assert_same_run(serial_runs["a"], tmp_path / "a")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "folds").rglob("*") if p.is_file()}
    run_on_ray([cfg], report=rep, pbk=pbk)  # nothing left: no task, only the run-level outputs again
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "a" / "folds").rglob("*") if p.is_file()}


def test_a_fold_error_on_a_worker_is_the_serial_one_line_error(cluster, tmp_path):
    bad = make_synthetic_cohort(tmp_path / "syn", n_patients=40, seed=1, patches=(5, 10), wsi_dim=8)
    feats = sorted(bad.features_dir.rglob("*.pt"))
    torch.save(torch.full((5, 8), float("nan")), feats[-1])  # read on the worker, when the fold loads that bag
    with pytest.raises(DataError, match="non-finite"):
        run_on_ray([_cfg(bad, tmp_path / "run", ["abmil"])])


def test_kemm_train_executor_ray_cli(cluster, syn, tmp_path):
    from kemm.cli import app

    (tmp_path / "c.yaml").write_text(dump_config(_cfg(syn, tmp_path / "run", ["snn"])))
    res = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--executor", "ray", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "metrics.json").is_file() and len(list((tmp_path / "run").glob("folds/snn/*/metrics.json"))) == 3
    bad = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--executor", "dask"])
    assert bad.exit_code == 2 and "--executor 'dask'" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--address", "auto"])
    assert bad.exit_code == 2 and "--executor ray" in bad.output
    bad = CliRunner().invoke(app, ["benchmark", "experiments/tcga", "--data-root", str(tmp_path), "--executor", "dask"])
    assert bad.exit_code == 2 and "--executor 'dask'" in bad.output and "Traceback" not in bad.output


# -- knowledge generation -------------------------------------------------------------------
def _reports(tmp_path: Path, n: int) -> Path:
    f = tmp_path / "reports.csv"
    write_reports_csv(f, n)
    return f


def _records(cache_dir: Path, source: str) -> list[dict]:
    """records.jsonl without what differs between any two builds (creation time, latency)."""
    lines = (cache_dir / source / "records.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("created", "latency_s")} for line in lines]


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("at", "created", "updated", "elapsed_s")}
    return obj


def test_rules_build_on_ray_equals_serial_and_rebuild_is_a_no_op(cluster, tmp_path):
    reports = _reports(tmp_path, 9)
    serial = api.build_reports(reports, "r", cache_dir=tmp_path / "serial", cancer_type="BLCA", batch_size=2)
    on_ray = api.build_reports(reports, "r", cache_dir=tmp_path / "ray", cancer_type="BLCA", batch_size=2,
                               executor="ray", replicas=2)
    assert (on_ray.ok, on_ray.generated) == (serial.ok, serial.generated) == (9, 9)
    assert _records(tmp_path / "ray", "r") == _records(tmp_path / "serial", "r")  # same records, same order
    m_serial, m_ray = (_untimed(json.loads((tmp_path / d / "r" / "manifest.json").read_text())) for d in ("serial", "ray"))
    assert m_ray == m_serial
    again = api.build_reports(reports, "r", cache_dir=tmp_path / "ray", cancer_type="BLCA", executor="ray", replicas=2)
    assert (again.cached, again.generated) == (9, 0)
    assert len(_records(tmp_path / "ray", "r")) == 9


def _scripted_build(tmp_path: Path, cache_dir: Path, backend, n: int = 8, progress=None):
    inputs = read_reports(_reports(tmp_path, n), cancer_type="BLCA")
    return build(load_prompt("refine_report"), inputs, backend, SourceCache(cache_dir, "s"), batch_size=2, progress=progress)


SCRIPT = {"TCGA-ZZ-0001": [json.dumps({**VALID_REPORT, "pT": "stage two"}), json.dumps(VALID_REPORT)],
          "TCGA-ZZ-0004": ["not json"]}


def test_repair_loop_on_ray_equals_serial_then_interrupted_build_resumes(cluster, tmp_path):
    serial = _scripted_build(tmp_path, tmp_path / "serial", AttemptScriptedBackend(SCRIPT))
    assert (serial.ok, serial.failed) == (7, 1)
    reps = RayReplicas("attempt-scripted", replicas=2, factory=functools.partial(AttemptScriptedBackend, SCRIPT))
    try:
        on_ray = _scripted_build(tmp_path, tmp_path / "ray", reps)
        assert (on_ray.ok, on_ray.failed, on_ray.generated) == (7, 1, 8)
        assert _records(tmp_path / "ray", "s") == _records(tmp_path / "serial", "s")
        retried = next(r for r in _records(tmp_path / "ray", "s") if r["case_id"] == "TCGA-ZZ-0001")
        assert retried["attempts"] == 2 and retried["status"] == "ok"

        seen = []

        def stop_after_two_batches(n):
            seen.append(n)
            if len(seen) == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            _scripted_build(tmp_path, tmp_path / "cut", reps, progress=stop_after_two_batches)
        assert len(_records(tmp_path / "cut", "s")) == 4  # two batches appended; those in flight are not
        resumed = _scripted_build(tmp_path, tmp_path / "cut", reps)
        assert (resumed.cached, resumed.generated) == (4, 4)
    finally:
        reps.close()
    # nothing lost, nothing written twice: the same records, in the same order, as the serial build
    assert _records(tmp_path / "cut", "s") == _records(tmp_path / "serial", "s")


def test_knowledge_cli_executor_errors_are_one_line(tmp_path):
    from kemm.knowledge.cli import app

    reports = _reports(tmp_path, 2)
    res = CliRunner().invoke(app, ["build", "refine_report", "--source", "x", "--reports", str(reports),
                                   "--cache-dir", str(tmp_path / "kc"), "--replicas", "2"])
    assert res.exit_code == 2 and "--executor ray" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "kc" / "x").exists()


def test_missing_ray_is_a_one_line_error(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from kemm._ray import import_ray\n"
            "from kemm.model.errors import RunError\n"
            "try:\n    import_ray(RunError)\nexcept RunError as e:\n    print(e)\n")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "pip install 'kemm[ray]'" in out.stdout, out.stderr
