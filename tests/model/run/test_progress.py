"""Progress output: bars only on a terminal; a log gets one line per fold with rate and ETA (issue 14)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kemm.model.run.progress import FoldProgress, SweepProgress, bars_on

ROOT = Path(__file__).resolve().parents[3]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_one_line_per_fold():
    s = io.StringIO()
    p = FoldProgress(total=4, done=1, progress=True, stream=s)
    assert p.bar is None and not bars_on(True, s)
    p.start("kemm fold 1")
    p.finish("kemm fold 1", 0.61234)
    p.finish("kemm fold 2", None)
    p.finish("kemm fold 3", 0.5)
    p.close()
    lines = s.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in s.getvalue()
    assert lines[0].startswith("cv 2/4 kemm fold 1: C-index 0.612 (") and "per fold, ETA " in lines[0]
    assert "C-index n/a" in lines[1] and lines[2].endswith("done)")


def test_terminal_gets_a_bar_and_quiet_gets_nothing():
    assert bars_on(True, _Tty()) and not bars_on(False, _Tty())
    s = io.StringIO()
    p = FoldProgress(total=2, done=0, progress=False, stream=s)
    p.finish("snn fold 0", 0.7)
    p.close()
    assert s.getvalue() == ""


def test_sweep_progress_in_a_log_is_a_line_per_interval_and_one_at_the_end():
    s = io.StringIO()
    p = SweepProgress(progress=True, stream=s, every_s=3600)
    p.add(total=6, done=2)
    p.update(running=2, queued=2, later=1)
    p.update(running=2, queued=1, finished=1, later=1)  # within the interval: nothing
    p.add(total=3, done=0)
    p.update(running=2, queued=1, finished=3)
    p.update(running=0, queued=0, finished=3)  # the end: always a line
    p.close()
    lines = s.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in s.getvalue()
    assert lines[0].startswith("ray: 9/9 fold runs done, 0 running, 0 queued (")


def test_sweep_progress_on_a_terminal_is_one_bar_and_quiet_is_nothing():
    t = _Tty()
    p = SweepProgress(progress=True, stream=t)
    p.add(total=4, done=1)
    p.update(running=2, queued=1, finished=1)
    assert p.bar is not None and p.bar.n == 2 and p.bar.total == 4
    p.close()
    s = io.StringIO()
    q = SweepProgress(progress=False, stream=s)
    q.add(total=1, done=0)
    q.update(running=0, queued=0, finished=1)
    q.close()
    assert s.getvalue() == ""


@pytest.mark.slow
def test_demo_log_is_small_when_not_a_terminal(tmp_path):
    """`kemm demo` into a file: no carriage-return spam, under 10 KB."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    log = tmp_path / "demo.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-c", "from kemm.cli import app; app()", "demo", "--work-dir",
                            str(tmp_path / "demo"), "--patients", "40", "--epochs", "1"],
                           stdout=f, stderr=subprocess.STDOUT, env=env, timeout=1200)
    text = log.read_text()
    assert r.returncode == 0, text[-2000:]
    assert len(text.encode()) < 10_000, len(text.encode())
    assert "cv 35/35 coxph fold 4" in text and "ETA" in text  # one line per (fold, model)
    assert text.count("\r") <= 3  # at most the encoder's one weight-loading line
    assert "kemm demo: 5-fold CV on 40 synthetic patients" in text
