"""Progress of a cross-validated run: bars on a terminal, one line per finished fold elsewhere.

A log file or CI job gets no carriage-return spam: where stderr is not a terminal, epoch bars
are off and each finished (fold, model) prints one line with its C-index, the time per fold
and an ETA for the rest of the run.

Imports: tqdm only.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm.auto import tqdm


def bars_on(progress: bool, stream: TextIO | None = None) -> bool:
    """Progress bars only when asked for and drawn on a terminal."""
    s = stream or sys.stderr
    return bool(progress) and hasattr(s, "isatty") and s.isatty()


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class FoldProgress:
    """Progress over the (fold, model) runs of one experiment.

    Args:
        total: (fold, model) runs of the experiment; done: those already finished (a resume).
        progress: ``train.progress``; False prints nothing.
        stream: where it goes (stderr).
    """

    def __init__(self, total: int, done: int, progress: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.done, self.enabled = total, done, bool(progress)
        self.started, self.finished_here = time.perf_counter(), 0
        self.bar = tqdm(total=total, initial=done, desc="cv", dynamic_ncols=True, file=self.stream) \
            if bars_on(progress, self.stream) else None

    def start(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"cv {label}")

    def finish(self, label: str, c_index: float | None) -> None:
        self.done += 1
        self.finished_here += 1
        c = f"{c_index:.3f}" if c_index is not None else "n/a"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(c=c)
            return
        if not self.enabled:
            return
        per = (time.perf_counter() - self.started) / self.finished_here
        left = self.total - self.done
        eta = f", ETA {_duration(per * left)}" if left else ", done"
        print(f"cv {self.done}/{self.total} {label}: C-index {c} ({_duration(per)} per fold{eta})",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SweepProgress:
    """Progress of fold runs spread over workers (``--executor ray``): done / running / queued.

    On a terminal one bar whose postfix says how many runs are running and queued; elsewhere
    (logs, CI) a line at most every ``every_s`` seconds, and one when the sweep ends.

    Args:
        progress: ``train.progress``; False prints nothing.
        stream: where it goes (stderr).
        every_s: least seconds between two log lines.
    """

    def __init__(self, progress: bool, stream: TextIO | None = None, every_s: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.enabled, self.every_s = bool(progress), every_s
        self.started = self.last_line = time.perf_counter()
        self.total = self.done = self.finished_here = 0
        self.bar = tqdm(total=0, desc="ray", dynamic_ncols=True, file=self.stream) \
            if bars_on(progress, self.stream) else None

    def add(self, total: int, done: int) -> None:
        """An experiment joined the sweep: ``total`` fold runs, ``done`` of them finished earlier."""
        self.total += total
        self.done += done
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.update(done)

    def update(self, running: int, queued: int, finished: int = 0, later: int = 0) -> None:
        """``finished`` more fold runs are done; ``running`` and ``queued`` now; ``later`` experiments not yet loaded."""
        self.done += finished
        self.finished_here += finished
        if self.bar is not None:
            self.bar.update(finished)
            self.bar.set_postfix(running=running, queued=queued, **({"experiments_left": later} if later else {}))
            return
        now = time.perf_counter()
        if not self.enabled or not finished or (now - self.last_line < self.every_s and (running or queued or later)):
            return
        self.last_line = now
        per = (now - self.started) / max(self.finished_here, 1)
        more = f", {later} experiment(s) not yet loaded" if later else ""
        print(f"ray: {self.done}/{self.total} fold runs done, {running} running, {queued} queued{more} "
              f"({_duration(now - self.started)} elapsed, {_duration(per)} per fold run overall)",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
