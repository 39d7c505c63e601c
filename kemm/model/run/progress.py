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
