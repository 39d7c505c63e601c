"""Patient dataset and collate: every modality with a mask.

``SurvivalData`` holds what is fixed for an experiment (cohort, genomic
groups, bag store, knowledge tables); ``SurvivalData.fold(...)`` fits the
per-fold parts (genomic scaling, survival bins) on the training patients and
returns ``PatientDataset`` objects.  ``collate`` pads a list of patients to the
:class:`~kemm.model.data.batch.Batch` the models take (shapes in ``batch.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

import kemm.knowledge as knowledge
from kemm.model.data.bags import BagStore, sample_patches
from kemm.model.data.batch import Batch
from kemm.model.data.cohort import Cohort, load_cohort
from kemm.model.data.genomics import GenomicGroups, GenomicScaler, build_groups
from kemm.model.data.clinical import ClinicalScaler, clinical_frame
from kemm.model.data.knowledge import TextTable, check_same_encoder, load_tables
from kemm.model.errors import DataError

from kemm.model.nn.losses import discretize, make_bins
from kemm.model.run.config import DataConfig, KnowledgeConfig

__all__ = ["FoldData", "PatientDataset", "SurvivalData", "build_data", "collate", "make_collate"]


@dataclass
class FoldData:
    train: "PatientDataset"
    eval: "PatientDataset"
    edges: np.ndarray  # bin edges fitted on the training patients
    scaler: GenomicScaler | None
    clinical_scaler: ClinicalScaler | None = None


class PatientDataset(Dataset):
    """One item per patient: a dict of per-patient tensors (None where missing)."""

    def __init__(
        self,
        data: "SurvivalData",
        case_ids: list[str],
        omics: np.ndarray | None,
        omics_present: np.ndarray | None,
        edges: np.ndarray | None,
        train: bool = False,
        seed: int = 0,
        clinical: np.ndarray | None = None,
    ):
        self.data = data
        self.clinical = clinical  # [n, C] standardised, or None
        self.case_ids = list(case_ids)
        self.omics = omics
        self.omics_present = omics_present
        self.train = train
        self.gen = torch.Generator().manual_seed(seed)
        t = data.cohort.table.loc[self.case_ids]
        self.has_labels = data.cohort.has_labels and "time" in t.columns
        if self.has_labels:
            self.time = t["time"].to_numpy(float)
            self.event = t["event"].to_numpy(int)
            self.label = _discretize(self.time, edges) if edges is not None else np.zeros(len(t), int)
        self.cancer_type = t["cancer_type"].tolist() if "cancer_type" in t.columns else [None] * len(t)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, i: int) -> dict:
        d = self.data
        case = self.case_ids[i]
        item: dict = {"case_id": case}
        if d.bags is not None:
            bag = d.bags.load(case)
            if bag is not None and self.train:
                bag = sample_patches(bag, d.max_patches, self.gen)
            item["wsi"] = bag
        if self.omics is not None:
            present = bool(self.omics_present[i])
            row = torch.from_numpy(self.omics[i]) if present else None
            item["omics"] = [row[idx] for idx in d.group_index] if row is not None else None
        if d.report is not None:
            r = d.report.get(case)
            item["report"] = torch.from_numpy(r) if r is not None else None
            item["report_kind"] = d.kind_ids(d.report, case) if r is not None else None
        if d.pbk is not None:
            # Grounded PBK is keyed per case; the static PBK per cancer type.
            key = case if d.pbk.get(case) is not None else self.cancer_type[i]
            p = d.pbk.get(key)
            item["pbk"] = torch.from_numpy(p) if p is not None else None
            item["pbk_kind"] = d.kind_ids(d.pbk, key) if p is not None else None
        if self.clinical is not None:
            item["clinical"] = torch.from_numpy(self.clinical[i])
        if self.has_labels:
            item["label"] = int(self.label[i])
            item["censorship"] = float(1 - self.event[i])
            item["time"] = float(self.time[i])
            item["event"] = int(self.event[i])
        return item


def _pbk_coverage_warnings(cohort: Cohort, pbk: TextTable) -> list[str]:
    """One line when patients' cancer type has no PBK in a per-type (static) source: their PBK tokens are masked.

    A cohort of a type without PBK still trains (the tokens of those patients are masked, as a
    patient without a report); the run says so instead of failing after other cohorts trained.
    A per-patient (grounded) source lacks patients whose report grounds nothing: that is missing
    knowledge like a missing report (``coverage()`` counts it), not a configuration problem.
    """
    if any(pbk.get(c) is not None for c in cohort.case_ids):
        return []
    t = cohort.table
    types = t["cancer_type"].tolist() if "cancer_type" in t.columns else [None] * len(t)
    missing: dict[str, int] = {}
    for ct in types:
        if ct is None or ct != ct or pbk.get(str(ct)) is None:
            label = "no cancer_type" if ct is None or ct != ct else str(ct)
            missing[label] = missing.get(label, 0) + 1
    if not missing:
        return []
    n = sum(missing.values())
    which = ", ".join(f"{k} ({v})" for k, v in sorted(missing.items()))
    return [
        f"knowledge source {pbk.source!r} has no PBK for {n} of {len(cohort.case_ids)} patients of {cohort.path} "
        f"({which}; it has {', '.join(sorted(pbk.by_key)[:8])}): their PBK tokens are masked; build PBK for these "
        "types (kemm-knowledge build pbk --cancer-types ...), or map the cohort's cancer type "
        "(data.columns.cancer_type, or data.cancer_type with data.columns.cancer_type: null)"
    ]


def knowledge_kinds(report: TextTable | None, pbk: TextTable | None) -> list[str]:
    """The kind vocabulary: "statement", "pbk", then every other kind of the tables, sorted."""
    found: set[str] = set()
    for t in (report, pbk):
        if t is not None:
            found |= t.all_kinds()
    return ["statement", "pbk", *sorted(found - {"statement", "pbk"})]


def _discretize(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.asarray(discretize(times, edges), dtype=int)


def _pad_tokens(xs: list[torch.Tensor | None], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L, dim]`` zeros-padded + ``Bool[B, L]``; L >= 1 so an all-missing batch keeps a shape."""
    if len(xs) == 1 and xs[0] is not None and xs[0].shape[0]:
        # One-bag batches (the MIL default): no zero-filled copy of a large bag.
        x = xs[0].float()
        return x.unsqueeze(0), torch.ones(1, x.shape[0], dtype=torch.bool)
    n = max([x.shape[0] for x in xs if x is not None] + [1])
    out = torch.zeros(len(xs), n, dim)
    mask = torch.zeros(len(xs), n, dtype=torch.bool)
    for b, x in enumerate(xs):
        if x is not None and x.shape[0]:
            out[b, : x.shape[0]] = x
            mask[b, : x.shape[0]] = True
    return out, mask


def _pad_kinds(ks: list[torch.Tensor | None], n: int) -> torch.Tensor:
    """``Long[B, n]`` kind ids, 0 where padded (masked, never read)."""
    out = torch.zeros(len(ks), n, dtype=torch.long)
    for b, k in enumerate(ks):
        if k is not None and len(k):
            out[b, : len(k)] = k
    return out


def make_collate(wsi_dim: int | None, omic_dims: list[int] | None, text_dim: int | None) -> Callable[[list[dict]], Batch]:
    """A collate function that knows the modality dimensions (to shape all-missing batches)."""

    def collate(items: list[dict]) -> Batch:
        batch: Batch = {"case_id": [it["case_id"] for it in items]}
        if wsi_dim is not None:
            batch["wsi"], batch["wsi_mask"] = _pad_tokens([it.get("wsi") for it in items], wsi_dim)
        if omic_dims:
            present = [it.get("omics") is not None for it in items]
            batch["omics"] = [
                torch.stack([it["omics"][g] if ok else torch.zeros(dg) for it, ok in zip(items, present)])
                for g, dg in enumerate(omic_dims)
            ]
            batch["omics_mask"] = torch.tensor(present, dtype=torch.bool)
        if text_dim is not None:
            for key in ("report", "pbk"):
                batch[key], batch[f"{key}_mask"] = _pad_tokens([it.get(key) for it in items], text_dim)
                batch[f"{key}_kind"] = _pad_kinds([it.get(f"{key}_kind") for it in items], batch[f"{key}_mask"].shape[1])
        if items and items[0].get("clinical") is not None:
            batch["clinical"] = torch.stack([it["clinical"] for it in items])
        if "label" in items[0]:
            batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
            batch["censorship"] = torch.tensor([it["censorship"] for it in items], dtype=torch.float32)
            batch["time"] = torch.tensor([it["time"] for it in items], dtype=torch.float32)
            batch["event"] = torch.tensor([it["event"] for it in items], dtype=torch.long)
        return batch

    return collate


class SurvivalData:
    """Everything of an experiment's data that does not depend on the fold.

    Args:
        cohort: the patient table.
        groups: genomic groups (None = no genomics).
        bags: WSI bag store (None = no WSI).
        report: per-case statement embeddings (None = no report knowledge).
        pbk: per-cancer-type statement embeddings (None = no PBK).
        max_patches: training-only patch cap.
        strict_knowledge: a report source matching no case is an error (training); off for predict.
    """

    def __init__(
        self,
        cohort: Cohort,
        groups: GenomicGroups | None = None,
        bags: BagStore | None = None,
        report: TextTable | None = None,
        pbk: TextTable | None = None,
        max_patches: int | None = None,
        strict_knowledge: bool = True,
    ):
        self.cohort = cohort
        self.groups = groups
        self.bags = bags
        self.report = report
        self.pbk = pbk
        self.max_patches = max_patches
        self.report_fields = None  # per-case numeric report fields, set by the harness when a model opts in
        self.report_texts: dict[str, str] | None = None  # raw report text per case (data.reports), for text baselines
        self.text_dim = check_same_encoder(report, pbk)
        self.kinds = knowledge_kinds(report, pbk)
        if groups is not None:
            # One scaler over the union of columns; groups index into it (pathways may overlap).
            self.omic_columns = list(dict.fromkeys(c for cols in groups.columns for c in cols))
            pos = {c: i for i, c in enumerate(self.omic_columns)}
            self.group_index = [torch.tensor([pos[c] for c in cols], dtype=torch.long) for cols in groups.columns]
        else:
            self.omic_columns, self.group_index = [], []
        if report is not None and strict_knowledge:
            n = sum(1 for c in cohort.case_ids if report.get(c) is not None)
            if n == 0:
                raise DataError(
                    f"knowledge source {report.source!r} has no entry for any case of {cohort.path} "
                    f"(e.g. {cohort.case_ids[:3]}); is it the report source of this cohort?"
                )
        # Warnings for the run summary (run.json, results.md): e.g. patients whose PBK is masked.
        self.warnings: list[str] = []
        if pbk is not None and strict_knowledge:
            self.warnings += _pbk_coverage_warnings(cohort, pbk)

    def kind_ids(self, table: TextTable, key: str) -> torch.Tensor:
        """``Long[S]`` index of each row's kind in ``self.kinds`` (an unknown kind is an error)."""
        pos = {k: i for i, k in enumerate(self.kinds)}
        try:
            return torch.tensor([pos[k] for k in table.kinds_of(key)], dtype=torch.long)
        except KeyError as e:
            raise DataError(
                f"knowledge source {table.source!r}, key {key!r}: statement kind {e.args[0]!r} is not among the "
                f"kinds the model was trained with ({self.kinds})"
            ) from None

    def pbk_key(self, case: str) -> str | None:
        """The key a case's PBK is read under: the case (grounded PBK) or its cancer type (static
        PBK); None where the PBK source has neither."""
        if self.pbk is None:
            return None
        if self.pbk.get(case) is not None:
            return case
        t = self.cohort.table
        ct = t.at[case, "cancer_type"] if "cancer_type" in t.columns else None
        if ct is None or ct != ct:  # no column, or NaN
            return None
        return str(ct) if self.pbk.get(str(ct)) is not None else None

    @property
    def wsi_dim(self) -> int | None:
        return self.bags.dim if self.bags is not None else None

    @property
    def omic_dims(self) -> list[int]:
        return self.groups.dims if self.groups is not None else []

    def collate(self):
        return make_collate(self.wsi_dim, self.omic_dims, self.text_dim)

    def coverage(self) -> dict[str, int]:
        """Patients with each modality (for the run log)."""
        ids = self.cohort.case_ids
        cov = {"patients": len(ids)}
        if self.bags is not None:
            cov["wsi"] = sum(self.bags.has(c) for c in ids)
        if self.groups is not None:
            x = self.cohort.table[self.omic_columns].to_numpy(float)
            cov["genomics"] = int((~np.isnan(x).all(axis=1)).sum())
        if self.report is not None:
            cov["report"] = sum(self.report.get(c) is not None for c in ids)
        if self.pbk is not None:
            t = self.cohort.table
            cov["pbk"] = sum(
                self.pbk.get(c) is not None or self.pbk.get(ct) is not None for c, ct in zip(ids, t["cancer_type"])
            )
        return cov

    def _clinical(self, names: list[str] | None, train_ids: list[str], eval_ids: list[str],
                  scaler: ClinicalScaler | None, report_fields=None):
        """Fit (training fold) or reuse the clinical scaler; ``(train [n, C], eval [m, C], scaler)``."""
        if not names:
            return None, None, None
        X = clinical_frame(self.cohort, names, report_fields)
        if scaler is None:
            scaler = ClinicalScaler(list(X.columns)).fit(X.loc[train_ids])
        return scaler.transform(X.loc[train_ids]), scaler.transform(X.loc[eval_ids]), scaler

    def fold(
        self,
        train_ids: list[str],
        eval_ids: list[str],
        edges: np.ndarray | None = None,
        n_bins: int = 4,
        seed: int = 0,
        scaler: GenomicScaler | None = None,
        clinical: list[str] | None = None,
        clinical_scaler: ClinicalScaler | None = None,
    ) -> FoldData:
        """Fit scaling and bins on ``train_ids`` (unless given) and build both datasets.

        ``clinical``: covariate names the model receives; their scaler is fitted on ``train_ids``.
        """
        t = self.cohort.table
        if edges is None:
            tr = t.loc[train_ids]
            if int(tr["event"].sum()) == 0:
                raise DataError(f"all {len(tr)} training patients are censored; survival bins need observed events")
            edges = np.asarray(make_bins(tr["time"].to_numpy(float), tr["event"].to_numpy(int), n_bins=n_bins), float)
        om_tr = om_ev = pr_tr = pr_ev = None
        if self.groups is not None:
            if scaler is None:
                scaler = GenomicScaler(self.omic_columns).fit(t.loc[train_ids])
            om_tr, pr_tr = scaler.transform(t.loc[train_ids])
            om_ev, pr_ev = scaler.transform(t.loc[eval_ids])
        cl_tr, cl_ev, clinical_scaler = self._clinical(
            clinical, train_ids, eval_ids, clinical_scaler, self.report_fields
        )
        train = PatientDataset(self, train_ids, om_tr, pr_tr, edges, train=True, seed=seed, clinical=cl_tr)
        ev = PatientDataset(self, eval_ids, om_ev, pr_ev, edges, train=False, seed=seed, clinical=cl_ev)
        return FoldData(train, ev, edges, scaler, clinical_scaler)

    def dataset(
        self,
        case_ids: list[str],
        edges: np.ndarray | None,
        scaler: GenomicScaler | None,
        clinical_scaler: ClinicalScaler | None = None,
    ) -> PatientDataset:
        """An evaluation dataset with given (already fitted) bins and scaling (predict)."""
        om = pr = None
        if self.groups is not None:
            if scaler is None:
                raise DataError("genomics configured but no fitted scaler given")
            om, pr = scaler.transform(self.cohort.table.loc[case_ids])
        cl = None
        if clinical_scaler is not None:
            X = clinical_frame(self.cohort, clinical_scaler.columns, self.report_fields)
            cl = clinical_scaler.transform(X.loc[case_ids])
        return PatientDataset(self, case_ids, om, pr, edges, train=False, clinical=cl)


def build_data(
    dcfg: DataConfig,
    kcfg: KnowledgeConfig,
    cohort: Cohort | None = None,
    report: TextTable | None = None,
    pbk: TextTable | None = None,
    require_labels: bool = True,
) -> SurvivalData:
    """Assemble ``SurvivalData`` from config sections (tables given in memory take precedence)."""
    if cohort is None:
        cohort = load_cohort(
            dcfg.cohort, dcfg.format, dcfg.columns, dcfg.endpoint, dcfg.cancer_type, require_labels=require_labels
        )
    groups = build_groups(dcfg.genomics, list(cohort.table.columns))
    bags = None
    if dcfg.features_dir:
        slides = dict(zip(cohort.case_ids, cohort.table["slide_ids"]))
        bags = BagStore(dcfg.features_dir, slides, missing=dcfg.missing_slides, cache=dcfg.cache_bags)
        if bags.dim is None:
            raise DataError(f"{dcfg.features_dir}: no feature file for any patient of {cohort.path}")
    if report is None and kcfg.report_sources:
        report = load_tables(kcfg.cache_dir, kcfg.report_sources, kcfg.encoder, "statement", kcfg.kind_values)
    if pbk is None and kcfg.pbk_sources:
        pbk = load_tables(kcfg.cache_dir, kcfg.pbk_sources, kcfg.encoder, "pbk", kcfg.kind_values)
    if pbk is not None and cohort.table["cancer_type"].isna().all():
        raise DataError(
            f"{cohort.path}: PBK needs a cancer type per patient; map data.columns.cancer_type or set data.cancer_type"
        )
    data = SurvivalData(cohort, groups, bags, report, pbk, dcfg.max_patches, strict_knowledge=require_labels)
    if dcfg.reports:
        data.report_texts = read_report_texts(dcfg.reports, dcfg.cancer_type)
    return data


def read_report_texts(paths: list[str], cancer_type: str | None = None) -> dict[str, str]:
    """Raw report text per case id (several reports of a patient joined) from report files."""
    try:
        inputs = knowledge.report_inputs([Path(p) for p in paths], cancer_type=cancer_type)
    except knowledge.KnowledgeError as e:
        raise DataError(str(e)) from None
    return {i.case_id: i.key_text for i in inputs if not i.skip_reason}


def collate(items: list[dict]) -> Batch:
    """Collate inferring dimensions from the items (use ``SurvivalData.collate()`` in training)."""
    def dim_of(key):
        for it in items:
            x = it.get(key)
            if x is not None:
                return x.shape[-1]
        return None

    wsi = dim_of("wsi") if any("wsi" in it for it in items) else None
    txt = dim_of("report") or dim_of("pbk")
    om = next((it["omics"] for it in items if it.get("omics") is not None), None)
    return make_collate(wsi, [o.shape[0] for o in om] if om else None, txt)(items)
