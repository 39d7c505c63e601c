"""Neural survival models as fold models: the training loop, prediction, checkpoints.

:class:`NeuralFoldModel` trains any registry network (``kemm.model.nn.registry``) with the
discrete-time survival NLL on one fold and predicts risk (``risk_from_logits``) and
survival (the per-bin survival read as a step function of time).  Its checkpoint
(``model.pt``) holds tensors and plain data only: weights, the ``ModelSpec``,
hyperparameters, bin edges, the genomic scaler and groups; it is read back with
``weights_only=True``.

Evaluation uses the last epoch by default.  Optional early stopping monitors an inner
split of the training fold, never the reported fold.  ``train.ensemble = n`` trains n
networks per fold (seeds ``seed + 1000 i``, same data) and averages their survival curves
(a seed ensemble: less variance from initialisation and batch order on a few hundred patients).
``train.linear_part`` fits a penalised CoxPH beside the network (``kemm.model.run.linear_part``):
its survival curve is averaged with the network's (``mixture``), or its linear predictor is added
to the hazard logits and the network learns the residual from a zero-weight output layer with the
life-table bias (``offset``).

Imports: numpy, torch, tqdm, ``kemm.model.data``, ``kemm.model.nn``, ``kemm.model.run``
(config, foldmodel, metrics, rundir).
"""
from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from kemm import __version__
from kemm.model.data.batch import Batch
from kemm.model.data.clinical import ClinicalScaler, clinical_frame
from kemm.model.data.dataset import PatientDataset, SurvivalData, make_collate
from kemm.model.data.genomics import GenomicGroups, GenomicScaler
from kemm.model.data.splits import inner_split
from kemm.model.errors import DataError, RunError
from kemm.model.nn.losses import hazards_to_survival, nll_surv_loss, risk_from_logits
from kemm.model.nn.registry import ModelSpec, build_model
from kemm.model.run.config import TrainConfig
from kemm.model.run.foldmodel import FoldInputs
from kemm.model.run.metrics import harrell_c, step_survival
from kemm.model.run.linear_part import LinearPart
from kemm.model.run.progress import bars_on
from kemm.model.run.rundir import FoldFiles

Collate = Callable[[list[dict]], Batch]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(ds: PatientDataset, batch_size: int, collate: Collate, shuffle: bool, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=g, num_workers=0)


def with_offsets(collate: Collate, offsets: dict[str, float] | None) -> Collate:
    """``collate`` that also puts each patient's linear-part offset into ``batch["offset"]`` ``[B]``."""
    if offsets is None:
        return collate

    def wrapped(items: list[dict]) -> Batch:
        b = collate(items)
        b["offset"] = torch.tensor([offsets[c] for c in b["case_id"]], dtype=torch.float32)
        return b

    return wrapped


def hazard_logits(model: torch.nn.Module, b: Batch) -> tuple[torch.Tensor, dict]:
    """``[B, n_bins]`` = the network's logits + the patient's linear-part offset (when the batch has one)."""
    out = model(b)
    logits = out["logits"]
    if "offset" in b:
        logits = logits + b["offset"].to(logits.dtype)[:, None]
    return logits, out


@torch.no_grad()
def predict_logits(model: torch.nn.Module, ds: PatientDataset, collate: Collate, batch_size: int = 32) -> np.ndarray:
    """Hazard logits ``[n, n_bins]`` of every patient of ``ds`` (eval mode, all patches; offsets included)."""
    model.eval()
    out = [hazard_logits(model, b)[0].float() for b in _loader(ds, batch_size, collate, False, 0)]
    return torch.cat(out).numpy()


def _survival(logits: np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 - 1.0 / (1.0 + np.exp(-logits.astype(np.float64))), axis=1)


def ensemble_logits(logits: list[np.ndarray], linear: np.ndarray | None = None, weight: float = 0.0) -> np.ndarray:
    """Logits ``[n, K]`` of the ensemble's mixture: the members' survival curves averaged
    (``S_k`` = mean over members), read back as per-bin hazards ``1 - S_k / S_{k-1}``.
    ``linear`` ``[n, K]``: a linear model's S at the bin ends, mixed in with share ``weight``.
    One member and no linear curve: its logits unchanged."""
    if len(logits) == 1 and linear is None:
        return logits[0]
    surv = np.mean([_survival(lg) for lg in logits], axis=0)
    if linear is not None:
        surv = (1.0 - weight) * surv + weight * np.asarray(linear, np.float64)
    prev = np.concatenate([np.ones_like(surv[:, :1]), surv[:, :-1]], axis=1)
    h = np.clip(1.0 - surv / np.maximum(prev, 1e-12), 1e-7, 1 - 1e-7)
    return np.log(h / (1 - h)).astype(logits[0].dtype)


def output_layer(net: torch.nn.Module, n_bins: int) -> torch.nn.Linear:
    """The network's survival output layer: ``net.head`` (or ``net.head.out``), a Linear to ``n_bins``."""
    head = getattr(net, "head", None)
    layer = head if isinstance(head, torch.nn.Linear) else getattr(head, "out", None)
    if not isinstance(layer, torch.nn.Linear) or layer.out_features != n_bins:
        raise RunError(f"network {type(net).__name__} has no `head` Linear layer to {n_bins} bins; "
                       "train.linear_part (offset) starts the head at the linear model and needs one")
    return layer


def baseline_logits(label: np.ndarray, event: np.ndarray, n_bins: int) -> np.ndarray:
    """``[n_bins]`` logits of the discrete-time hazards ``d_k / n_k`` of these patients (life table).

    At risk in bin k: label >= k; an event in bin k: uncensored with label k (the NLL's convention:
    a patient censored in bin k survived it). Clipped to [0.01, 0.99].
    """
    label, event = np.asarray(label, int), np.asarray(event).astype(bool)
    at_risk = np.array([(label >= k).sum() for k in range(n_bins)], float)
    d = np.array([((label == k) & event).sum() for k in range(n_bins)], float)
    h = np.clip(d / np.maximum(at_risk, 1.0), 0.01, 0.99)
    return np.log(h / (1 - h))


def _start_at_offset(net: torch.nn.Module, label: np.ndarray, event: np.ndarray, n_bins: int) -> None:
    """Zero output weights and life-table bias: the untrained network predicts exactly the linear
    model (offset + baseline hazard), and what it learns is a residual grown from zero."""
    layer = output_layer(net, n_bins)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.as_tensor(baseline_logits(label, event, n_bins), dtype=layer.bias.dtype))


def _c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    try:
        return harrell_c(time, event, risk)
    except Exception:  # an inner split without a comparable pair: no score this epoch
        return float("nan")


def _train_epoch(model: torch.nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, tc: TrainConfig) -> float:
    """One pass over ``loader`` with gradient accumulation; returns the mean loss."""
    model.train()
    opt.zero_grad(set_to_none=True)
    total, n_steps = 0.0, len(loader)
    for step, batch in enumerate(loader):
        b: Batch = batch
        logits, out = hazard_logits(model, b)
        loss = nll_surv_loss(logits, b["label"], b["censorship"], alpha=tc.alpha)
        loss = loss + out.get("aux_loss", 0.0)
        (loss / tc.grad_accum).backward()
        if (step + 1) % tc.grad_accum == 0 or step + 1 == n_steps:
            opt.step()
            opt.zero_grad(set_to_none=True)
        total += float(loss.detach())
    return total / max(n_steps, 1)


class NeuralFoldModel:
    """A registry network trained on one fold (see the module docstring)."""

    uses_clinical = False

    def __init__(self, name: str, key: str | None = None, hparams: dict[str, Any] | None = None,
                 train: TrainConfig | None = None, desc: str = "", clinical: list[str] | None = None) -> None:
        self.name = name
        self.clinical = list(clinical or [])  # covariates the network receives (data.model_clinical by default)
        self.clinical_scaler: ClinicalScaler | None = None
        self.key = key or name
        self.hparams = dict(hparams or {})
        self.train_cfg = train
        self.desc = desc
        self.nets: list[torch.nn.Module] = []  # one per ensemble member
        self.spec: ModelSpec | None = None
        self.edges: np.ndarray | None = None
        self.scaler: GenomicScaler | None = None
        self.groups: GenomicGroups | None = None
        self.history: list[dict] = []
        self.linear: LinearPart | None = None  # train.linear_part: a CoxPH mixed in or offsetting the logits
        self._train_offsets: dict[str, float] | None = None
        self.source = ""  # the fold folder a loaded model came from (for messages)
        self._cache: dict[tuple, np.ndarray] = {}
        self._views: dict[int, SurvivalData] = {}

    # -- training ----------------------------------------------------------------------
    def fit(self, inputs: FoldInputs, train_ids: list[str], edges: np.ndarray, seed: int) -> NeuralFoldModel:
        """Train on ``train_ids``; with early stopping, on a part of them, monitoring the rest."""
        tc = self.train_cfg or inputs.train
        if tc is None:
            raise RunError(f"model {self.key!r}: no training settings given")
        data, t = inputs.data, inputs.data.cohort.table.loc[train_ids]
        self.edges, self.groups = np.asarray(edges, float), data.groups
        self.scaler = GenomicScaler(data.omic_columns).fit(t) if data.groups is not None else None
        self.clinical_scaler = None
        if self.clinical:  # training-fold statistics only
            X = clinical_frame(data.cohort, self.clinical, data.report_fields)
            self.clinical_scaler = ClinicalScaler(list(X.columns)).fit(X.loc[train_ids])
        self.linear, self._train_offsets = None, None
        if tc.linear_part.enabled:  # offset mode: cross-fitted offsets for the training patients
            self.linear = LinearPart(tc.linear_part, self.key)
            self._train_offsets = self.linear.fit(inputs, list(train_ids), seed)
        fit_ids, inner = list(train_ids), None
        if tc.early_stopping.enabled:
            fit_ids, inner = inner_split(train_ids, t["time"].to_numpy(), t["event"].to_numpy(),
                                         tc.early_stopping.inner_val_fraction, seed)
        self.nets, self.history = [], []
        for i in range(tc.ensemble):
            net, hist = self._train(data, tc, fit_ids, inner, seed + 1000 * i)
            self.nets.append(net)
            self.history += [{**h, "member": i} for h in hist] if tc.ensemble > 1 else hist
        self._cache.clear()
        return self

    @property
    def net(self) -> torch.nn.Module | None:
        """The first (or only) network: what ``explain`` reads."""
        return self.nets[0] if self.nets else None

    def _train(self, data: SurvivalData, tc: TrainConfig, fit_ids: list[str], inner: list[str] | None,
               seed: int) -> tuple[torch.nn.Module, list[dict]]:
        """The epoch loop; returns the model (last epoch, or best inner-val epoch) and its history."""
        seed_everything(seed)
        fd = data.fold(fit_ids, inner or fit_ids[:1], edges=self.edges, scaler=self.scaler, seed=seed,
                       clinical=self.clinical, clinical_scaler=self.clinical_scaler)
        self.spec = ModelSpec(wsi_dim=data.wsi_dim, omic_dims=data.omic_dims, text_dim=data.text_dim, n_bins=tc.n_bins,
                              clinical_dim=self.clinical_scaler.dim if self.clinical_scaler is not None else 0,
                              kinds=list(data.kinds))
        try:
            model = build_model(self.name, self.spec, **self.hparams)
        except (ValueError, TypeError, KeyError) as e:
            raise RunError(f"model {self.key!r}: {e}") from None
        if self._train_offsets is not None:
            _start_at_offset(model, fd.train.label, fd.train.event, tc.n_bins)
        collate = with_offsets(data.collate(), self._train_offsets)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr, weight_decay=tc.weight_decay)
        history: list[dict] = []
        best_state, best_score, bad = None, -np.inf, 0
        bar = tqdm(range(tc.epochs), desc=self.desc, leave=False, disable=not bars_on(tc.progress), dynamic_ncols=True)
        for epoch in bar:
            loader = _loader(fd.train, tc.batch_size, collate, True, seed * 1000 + epoch)
            rec: dict = {"epoch": epoch, "loss": _train_epoch(model, loader, opt, tc)}
            if inner:
                risk = risk_from_logits(torch.as_tensor(predict_logits(model, fd.eval, collate))).numpy()
                rec["inner_c_index"] = _c_index(fd.eval.time, fd.eval.event, risk)
                score = rec["inner_c_index"] if np.isfinite(rec["inner_c_index"]) else -np.inf
                if score > best_score:
                    best_score, bad = score, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    rec["best"] = True
                else:
                    bad += 1
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if inner and bad >= tc.early_stopping.patience:
                break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        return model, history

    # -- prediction --------------------------------------------------------------------
    def _data(self, inputs: FoldInputs) -> SurvivalData:
        """``inputs.data`` with this model's genomic groups (a new cohort may lack or reorder them)."""
        data = inputs.data
        same = (self.groups is None) or (data.groups is not None and data.groups.names == self.groups.names
                                         and data.groups.columns == self.groups.columns)
        kinds = list(self.spec.kinds) if self.spec is not None else list(data.kinds)
        if same and data.kinds == kinds:
            return data
        if same:  # a new cohort's knowledge: kind ids must be those the network was trained with
            if id(inputs) not in self._views:
                view = copy.copy(data)
                view.kinds = kinds
                self._views[id(inputs)] = view
            return self._views[id(inputs)]
        if id(inputs) not in self._views:
            cohort = data.cohort
            missing = [c for cols in self.groups.columns for c in cols if c not in cohort.table.columns]
            if missing:
                raise DataError(
                    f"{cohort.path}: genomic column(s) {missing[:5]} used in training are missing "
                    f"({len(missing)} in all); the new cohort needs the same *_rnaseq/_cnv/_mut columns"
                )
            view = SurvivalData(cohort, self.groups, data.bags, data.report, data.pbk, None, strict_knowledge=False)
            view.report_fields, view.kinds = data.report_fields, kinds
            self._views[id(inputs)] = view
        return self._views[id(inputs)]

    def _logits(self, inputs: FoldInputs, ids: list[str]) -> np.ndarray:
        """Hazard logits ``[n, n_bins]``, cached per (inputs, ids) so risk and survival share one pass."""
        key = (id(inputs), tuple(ids))
        if key not in self._cache:
            if self.net is None or self.spec is None:
                raise RuntimeError("NeuralFoldModel is not fitted; call fit() or load() first")
            data = self._data(inputs)
            self._check_spec(data)
            collate = with_offsets(make_collate(self.spec.wsi_dim, self.spec.omic_dims, self.spec.text_dim),
                                   self._offsets(inputs, list(ids)))
            ds = data.dataset(list(ids), self.edges, self.scaler, self.clinical_scaler)
            lin = self.linear if self.linear is not None and self.linear.cfg.mode == "mixture" else None
            self._cache[key] = ensemble_logits([predict_logits(n, ds, collate) for n in self.nets],
                                               lin.survival_at(inputs, list(ids), self.edges) if lin else None,
                                               lin.cfg.weight if lin else 0.0)
        return self._cache[key]

    def _offsets(self, inputs: FoldInputs, ids: list[str]) -> dict[str, float] | None:
        """Offset mode: the linear part's offsets for ``ids`` from its fit on every training patient."""
        if self.linear is None or self.linear.cfg.mode != "offset":
            return None
        return dict(zip(ids, self.linear.offsets(inputs, ids).tolist()))

    def _check_spec(self, data: SurvivalData) -> None:
        for k, have in (("wsi_dim", data.wsi_dim), ("text_dim", data.text_dim)):
            want = getattr(self.spec, k)
            if want is not None and have is not None and want != have:
                raise DataError(f"{self.source or self.key}: the model was trained with {k}={want}, the new data give {have}")

    def predict_risk(self, inputs: FoldInputs, ids: list[str]) -> np.ndarray:
        """Risk ``[n]`` = expected bin under the predicted hazards (``risk_from_logits``)."""
        return risk_from_logits(torch.as_tensor(self._logits(inputs, ids))).numpy()

    def predict_survival(self, inputs: FoldInputs, ids: list[str], times: np.ndarray) -> np.ndarray:
        """``[n, len(times)]``: the per-bin survival as a step function (exact at the bin edges).

        float32 like the network's output (the values written to ``predictions.csv``).
        """
        s_bins = hazards_to_survival(torch.as_tensor(self._logits(inputs, ids))).numpy()
        return step_survival(s_bins, self.edges, times).astype(s_bins.dtype)

    def record(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "clinical": self.clinical_scaler.out_columns_ if self.clinical_scaler is not None else [],
            "knowledge_kinds": list(self.spec.kinds) if self.spec is not None and self.spec.text_dim else [],
            **({"linear_part": self.linear.record()} if self.linear is not None else {}),
        }

    # -- state -------------------------------------------------------------------------
    def save(self, fold: FoldFiles) -> None:
        if self.net is None or self.spec is None:
            raise RuntimeError("NeuralFoldModel is not fitted; nothing to save")
        fold.write_torch({
            "name": self.name,
            "key": self.key,
            "hparams": self.hparams,
            "spec": self.spec.__dict__,
            "state_dict": self.nets[0].state_dict(),
            "ensemble_state_dicts": [n.state_dict() for n in self.nets[1:]],
            "edges": self.edges.tolist(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "groups": {"names": self.groups.names, "columns": self.groups.columns} if self.groups else None,
            "clinical": self.clinical_scaler.state_dict() if self.clinical_scaler is not None else None,
            "linear_part": self.linear.to_state() if self.linear is not None else None,
            "kemm_version": __version__,
        })

    @classmethod
    def load(cls, fold: FoldFiles) -> NeuralFoldModel:
        ck = fold.read_torch()
        m = cls(ck["name"], ck.get("key", fold.model), ck["hparams"])
        m.spec = ModelSpec(**ck["spec"])
        m.nets = []
        for sd in [ck["state_dict"], *ck.get("ensemble_state_dicts", [])]:
            net = build_model(ck["name"], m.spec, **ck["hparams"])
            net.load_state_dict(sd)
            m.nets.append(net)
        m.edges = np.asarray(ck["edges"], float)
        if ck.get("groups"):
            m.groups = GenomicGroups(ck["groups"]["names"], ck["groups"]["columns"])
            m.scaler = GenomicScaler.from_state(ck["scaler"])
        if ck.get("clinical"):
            m.clinical_scaler = ClinicalScaler.from_state(ck["clinical"])
            m.clinical = list(m.clinical_scaler.columns)
        if ck.get("linear_part"):
            m.linear = LinearPart.from_state(ck["linear_part"], m.key)
        m.source = str(Path(fold.dir))
        return m
