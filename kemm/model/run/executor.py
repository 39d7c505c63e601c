"""The training sweep on Ray: every unfinished (experiment, model, fold) as one Ray task.

``run_on_ray(cfgs, address)`` is ``run_experiment`` over many configs at once (``kemm train
--executor ray``, ``kemm benchmark --executor ray``). The driver does what the serial run does
before and after the folds, with the same functions (``train.start_experiment``: check, load,
claim the run directory, find the finished folds; ``train.finish_experiment``: the run-level
outputs), so a resume skips exactly the folds a serial run would skip. In between, each
unfinished (model, fold) is a Ray task (``num_cpus=1``, one torch thread, seeded per fold as in
``run_fold``) that trains in a temporary directory on its node and returns the record and the
bytes of the fold's files; the driver writes them into the run directory, ``metrics.json``
last. Only the driver writes a run directory, so outputs need no shared filesystem; the inputs
(cohort, features, knowledge cache) must be readable at the same paths on every node.

Experiments are loaded as the cluster needs work (at most about twice its CPUs of fold runs in
flight), so a 33-cohort sweep does not hold every cohort in the driver's memory at once.

Results equal the serial run's where the serial run trains with one thread too (the default
on a machine of at most 2 cores, or ``train.num_threads: 1``): fold seeds do not depend on
the order folds run in; ``metrics.json``'s ``seconds`` differs.

Imports: ``kemm._ray`` (ray lazily), ``kemm._io``, ``kemm.model.run`` (train, rundir, progress).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kemm._io import atomic_write_bytes
from kemm._ray import cluster_cpus, session, task_error_cause
from kemm.model.data.knowledge import TextTable
from kemm.model.errors import ModelError, RunError
from kemm.model.run.config import ExperimentConfig
from kemm.model.run.progress import SweepProgress
from kemm.model.run.rundir import FoldFiles, RunDir
from kemm.model.run.train import Experiment, finish_experiment, run_fold, start_experiment

log = logging.getLogger(__name__)
EXECUTORS = ("serial", "ray")


@dataclass
class SweepResult:
    """Per config of the sweep (in order): its run directory and the wall seconds from loading it
    to writing its run-level outputs (its folds shared the cluster with other experiments')."""

    run_dirs: list[Path]
    seconds: list[float]


def train_fold(exp: Experiment, model_key: str, k: int) -> tuple[dict, dict[str, bytes]]:
    """The Ray task: one (model, fold) of ``exp`` in a temporary run directory.

    Returns:
        the fold's record (``metrics.json``) and ``{file name: bytes}`` of every file it wrote.
    """
    torch.set_num_threads(1)
    # Ray hands arrays over read-only (zero-copy from its object store); a fold may write its own copy.
    exp = copy.deepcopy(exp)
    entry = next(m for m in exp.cfg.models if m.key == model_key)
    fold = next(f for f in exp.folds if f.k == k)
    with tempfile.TemporaryDirectory(prefix="kemm-fold-") as tmp:
        here = dataclasses.replace(exp, run=RunDir(tmp))
        record = run_fold(here, entry, fold)
        d = here.run.fold(model_key, k).dir
        return record, {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def write_fold(files: FoldFiles, blobs: dict[str, bytes]) -> None:
    """A fold's files as its task wrote them; ``metrics.json`` last, since it marks the fold done."""
    for name in sorted(blobs, key=lambda n: n == files.metrics_path.name):
        atomic_write_bytes(files.dir / name, blobs[name])


@dataclass
class _Open:
    """An experiment with fold runs in flight."""

    exp: Experiment
    ref: Any  # ObjectRef of ``exp``, shared by its tasks
    left: int
    t0: float


@dataclass
class _Sweep:
    ray: Any
    cfgs: list[ExperimentConfig]
    restart: bool = False
    report: TextTable | None = None
    pbk: TextTable | None = None
    progress: bool = True
    run_dirs: dict[int, Path] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.task = self.ray.remote(num_cpus=1)(train_fold)
        self.cpus = cluster_cpus(self.ray)
        self.window = 2 * self.cpus
        self.waiting: deque[int] = deque(range(len(self.cfgs)))
        self.open: dict[int, _Open] = {}
        self.inflight: dict[Any, tuple[int, str, int]] = {}
        self.prog = SweepProgress(self.progress)

    def run(self) -> SweepResult:
        try:
            self._fill()
            while self.inflight:
                self._collect()
                self._fill()
        except BaseException:
            for ref in self.inflight:  # a failed or interrupted sweep leaves no work behind
                self.ray.cancel(ref)
            raise
        finally:
            self.prog.close()
        return SweepResult([self.run_dirs[i] for i in range(len(self.cfgs))],
                           [round(self.seconds[i], 1) for i in range(len(self.cfgs))])

    def _fill(self) -> None:
        """Load experiments and submit their fold runs until the cluster has enough work."""
        while self.waiting and len(self.inflight) < self.window:
            i = self.waiting.popleft()
            t0 = time.perf_counter()
            exp, pending = start_experiment(self.cfgs[i], report=self.report, pbk=self.pbk, restart=self.restart)
            total = len(exp.folds) * len(exp.cfg.models)
            self.prog.add(total, total - len(pending))
            if not pending:
                self._finish(i, exp, t0)
                continue
            ref = self.ray.put(exp)
            for f, m in pending:  # the serial run's order: folds, then models
                self.inflight[self.task.remote(ref, m.key, f.k)] = (i, m.key, f.k)
            self.open[i] = _Open(exp, ref, len(pending), t0)
        self._report()

    def _collect(self) -> None:
        """Wait for a fold run, write its files, finish its experiment when it was the last."""
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
        for ref in ready:
            i, key, k = self.inflight.pop(ref)
            o = self.open[i]
            _, blobs = self._result(ref, o.exp, key, k)
            write_fold(o.exp.run.fold(key, k), blobs)
            o.left -= 1
            if o.left == 0:
                del self.open[i]
                self._finish(i, o.exp, o.t0)
        self._report(len(ready))

    def _result(self, ref: Any, exp: Experiment, key: str, k: int) -> tuple[dict, dict[str, bytes]]:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            cause = task_error_cause(self.ray, e)
            if isinstance(cause, ModelError):
                raise cause from None  # the one-line error the serial run gives
            if cause is not e:
                raise  # a bug: Ray's error carries the task's own traceback
            first = (str(e).strip().splitlines() or [""])[0]
            raise RunError(f"{exp.run.root}: model {key!r} fold {k}: the Ray task failed ({type(e).__name__}: "
                           f"{first}); run the same command again to resume at the unfinished folds") from None

    def _finish(self, i: int, exp: Experiment, t0: float) -> None:
        self.run_dirs[i] = finish_experiment(exp)
        self.seconds[i] = time.perf_counter() - t0

    def _report(self, finished: int = 0) -> None:
        running = min(len(self.inflight), self.cpus)
        self.prog.update(running, len(self.inflight) - running, finished, later=len(self.waiting))


def run_on_ray(
    cfgs: list[ExperimentConfig],
    address: str | None = None,
    restart: bool = False,
    report: TextTable | None = None,
    pbk: TextTable | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Run every unfinished (model, fold) of every config as a Ray task; write each run's outputs.

    Args:
        cfgs: experiments (their ``output_dir`` must differ).
        address: the Ray cluster (``kemm._ray.session``): None = a local one, "auto" = this node's.
        restart, report, pbk: as ``run_experiment`` (the tables apply to every config).
        progress: show progress (default: the first config's ``train.progress``).
    """
    dirs = [str(c.output_dir or c.run_dir) for c in cfgs]
    dup = next((d for d in dirs if dirs.count(d) > 1), None)
    if dup is not None:
        raise RunError(f"two experiments of the sweep write to {dup}; give them different output_dir")
    if progress is None:
        progress = bool(cfgs and cfgs[0].train.progress)
    with session(address, RunError) as ray:
        return _Sweep(ray, list(cfgs), restart, report, pbk, progress).run()
