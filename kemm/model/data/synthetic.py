"""Synthetic cohort with planted prognostic signal (for `kemm demo` and the tests).

Each patient has latent factors; the hazard is a weighted sum of them, so a
model can only reach a high C-index by reading the modalities that carry them:

- ``z_report`` drives the pathology report (grade, pT/pN, stage, nodes x/y,
  margins, LVI, PNI, size), written as OCR-like text in the tcga-path-report
  layout (``pdf_file_name_path`` starting with a fake TCGA barcode, ``ocr_text``);
- ``z_wsi`` sets the fraction of patches drawn from a "high-risk" cluster in
  the WSI bags (``.pt`` and ``.h5`` files, alternating);
- ``z_gen`` shifts the genes of a few genomic groups (``*_rnaseq`` columns,
  grouped by a ``signatures.csv`` in MCAT's layout).

``signal="all"``: hazard = report + WSI + genomics + a little age;
``signal="reports"``: hazard = report only (WSI and genomics still have
structure, but it is not prognostic) — knowledge must beat no knowledge there.

Survival is Weibull; independent uniform censoring is tuned to the requested
censored fraction.  Everything is seeded and deterministic.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pandas as pd
import torch

from kemm.model.data.knowledge import TextTable

FAMILIES = [
    "Tumor Suppressor Genes",
    "Oncogenes",
    "Protein Kinases",
    "Cell Differentiation Markers",
    "Transcription Factors",
    "Cytokines and Growth Factors",
]


@dataclass
class SyntheticCohort:
    """Paths of a generated cohort (all under ``root``)."""

    root: Path
    cohort_csv: Path
    reports_csv: Path
    features_dir: Path
    signatures_csv: Path
    truth_csv: Path
    cancer_type: str
    n_patients: int
    censored_fraction: float


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _weibull_times(rng: np.random.Generator, eta: np.ndarray, scale: float = 40.0, shape: float = 1.3) -> np.ndarray:
    u = rng.uniform(1e-9, 1.0, len(eta))
    return scale * (-np.log(u) / np.exp(eta)) ** (1.0 / shape)


def _censor(rng: np.random.Generator, t: np.ndarray, target: float, admin: float = 150.0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform(0, c_max) censoring, c_max bisected so the censored fraction ~ target."""
    u = rng.uniform(0.0, 1.0, len(t))
    lo, hi = 1.0, 5000.0
    for _ in range(60):
        mid = (lo + hi) / 2
        frac = np.mean(np.minimum(u * mid, admin) < t)
        lo, hi = (mid, hi) if frac > target else (lo, mid)
    c = np.minimum(u * (lo + hi) / 2, admin)
    obs = np.minimum(t, c)
    censored = (c < t).astype(int)
    return np.maximum(np.round(obs, 2), 0.1), censored


# -- report text ---------------------------------------------------------------------
def _report_fields(rng: np.random.Generator, z: np.ndarray) -> pd.DataFrame:
    n = len(z)
    sev = z + rng.normal(0, 0.45, n)
    grade = np.where(sev < -0.7, "G1", np.where(sev < 0.35, "G2", "G3"))
    t_cat = np.digitize(sev + rng.normal(0, 0.35, n), [-0.9, 0.0, 0.9]) + 1  # 1..4
    n_cat = np.digitize(sev + rng.normal(0, 0.45, n), [0.2, 1.1])  # 0..2
    examined = rng.integers(6, 25, n)
    positive = np.where(n_cat == 0, 0, np.where(n_cat == 1, rng.integers(1, 4, n), rng.integers(4, 10, n)))
    positive = np.minimum(positive, examined)
    stage = np.where(n_cat > 0, np.where(t_cat >= 4, "IV", "III"), np.where(t_cat <= 1, "I", np.where(t_cat == 2, "II", "III")))
    lvi = rng.uniform(size=n) < _sigmoid(2.0 * sev - 0.3)
    pni = rng.uniform(size=n) < _sigmoid(1.5 * sev - 1.0)
    margin = np.where(rng.uniform(size=n) < _sigmoid(2.0 * sev - 2.0), "positive", "negative")
    size = np.round(np.exp(0.9 + 0.35 * sev + rng.normal(0, 0.25, n)), 1)
    sub = np.where(t_cat >= 2, rng.choice(["a", "b", ""], n), "")
    return pd.DataFrame(
        {
            "grade": grade,
            "pT": [f"T{t}{s}" for t, s in zip(t_cat, sub)],
            "pN": [f"N{k}" for k in n_cat],
            "stage": stage,
            "nodes_positive": positive,
            "nodes_examined": examined,
            "lvi": np.where(lvi, "present", "absent"),
            "pni": np.where(pni, "present", "absent"),
            "margin": margin,
            "size_cm": size,
        }
    )


_GRADE_TEXT = {
    "G1": ["G1 (well differentiated)", "low grade (G1)"],
    "G2": ["G2 (moderately differentiated)", "G2"],
    "G3": ["G3 (poorly differentiated)", "high grade (G3)"],
}
_FILLER = [
    "The specimen is received in formalin and labeled with the patient's name.",
    "Sections are submitted in cassettes A1 through A12.",
    "The mucosal surface shows a tan-white exophytic lesion.",
    "Representative sections of the lesion and surrounding tissue are submitted.",
    "Clinical history: hematuria. Prior biopsy reviewed.",
    "Immunohistochemical stains were reviewed with appropriate controls.",
]


def _ocr_noise(rng: np.random.Generator, text: str, rate: float) -> str:
    """Character confusions and stray spaces, like OCR of a scanned report."""
    swaps = {"l": "1", "O": "0", "o": "0", "e": "c", "i": "l", "S": "5", "m": "rn"}
    out = []
    for ch in text:
        r = rng.uniform()
        if r < rate and ch in swaps:
            out.append(swaps[ch])
        elif r < rate * 1.3 and ch == " ":
            out.append("  ")
        else:
            out.append(ch)
    return "".join(out)


def _report_text(rng: np.random.Generator, case_id: str, f: pd.Series, noise: float, omit: float) -> str:
    def keep() -> bool:
        return rng.uniform() >= omit

    lines = []
    if keep():
        lines.append(f"Histologic grade: {rng.choice(_GRADE_TEXT[f['grade']])}.")
    if keep():
        lines.append(f"Tumor size: {f['size_cm']} cm in greatest dimension.")
    if keep():
        lines.append(f"Lymphovascular invasion: {f['lvi']}.")
    if keep():
        lines.append(f"Perineural invasion: {f['pni']}.")
    if keep():
        lines.append(
            rng.choice(
                [f"Surgical margins: {f['margin']}.", f"Margins {f['margin']} for carcinoma." if f["margin"] == "positive"
                 else "Margins negative for carcinoma."]
            )
        )
    if keep():
        lines.append(
            rng.choice(
                [
                    f"Lymph nodes: {f['nodes_positive']}/{f['nodes_examined']} positive for metastatic carcinoma.",
                    f"{f['nodes_positive']} of {f['nodes_examined']} lymph nodes positive for carcinoma.",
                ]
            )
        )
    rng.shuffle(lines)
    staging = []
    if keep():
        staging.append(f"Pathologic stage: p{f['pT']} p{f['pN']} pMX.")
    if keep():
        staging.append(f"AJCC stage: {f['stage']}.")
    filler = " ".join(_ocr_noise(rng, s, noise) for s in rng.choice(_FILLER, size=3, replace=False))
    head = _ocr_noise(rng, f"SURGICAL PATHOLOGY REPORT  Patient ID: {case_id}  Specimen: urinary bladder, cystectomy.", noise)
    diag = "FINAL DIAGNOSIS: Invasive urothelial carcinoma."
    return "\n".join([head, "GROSS DESCRIPTION:", filler, diag, *lines, *staging])


# -- generator -----------------------------------------------------------------------
def _genomics(rng: np.random.Generator, n: int, z_gen: np.ndarray, genes_per_group: int, signal_groups: int,
              coverage: float) -> tuple[list[list[str]], pd.DataFrame]:
    """Gene names per family and the ``<GENE>_rnaseq`` table ``[n, families * genes]`` (NaN rows = no genomics)."""
    # signal groups carry z_gen, the rest is noise
    n_groups = len(FAMILIES)
    genes = [[f"SY{g + 1}G{j + 1:02d}" for j in range(genes_per_group)] for g in range(n_groups)]
    gen = {}
    for g in range(n_groups):
        load = rng.choice([-1.0, 1.0], genes_per_group) * rng.uniform(0.6, 1.0, genes_per_group)
        for j, name in enumerate(genes[g]):
            x = rng.normal(size=n)
            if g < signal_groups:
                x = x * 0.8 + load[j] * z_gen
            gen[f"{name}_rnaseq"] = np.round(x, 4)
    gen_df = pd.DataFrame(gen)
    gen_df.loc[rng.uniform(size=n) >= coverage, :] = np.nan

    return genes, gen_df


def _write_slides(rng: np.random.Generator, feat_dir: Path, case_ids: list[str], z_wsi: np.ndarray, wsi_dim: int,
                  patches: tuple[int, int], multi_slide_fraction: float, wsi_coverage: float) -> tuple[list[dict], np.ndarray]:
    """Write every slide's features (``.pt`` and ``.h5`` alternately); returns the slide rows and WSI presence ``[n]``."""
    n = len(case_ids)
    # WSI: background clusters + a high-risk cluster whose share grows with z_wsi
    centers = rng.normal(size=(5, wsi_dim)) * 1.5
    risk_center = rng.normal(size=wsi_dim) * 2.0
    n_slides = np.where(rng.uniform(size=n) < multi_slide_fraction, 2, 1)
    has_wsi = rng.uniform(size=n) < wsi_coverage
    rows = []
    k_file = 0
    for i, case in enumerate(case_ids):
        frac = float(_sigmoid(1.6 * z_wsi[i] - 1.2))
        if not has_wsi[i]:
            rows.append({"case_id": case, "slide_id": ""})
            continue
        for s in range(n_slides[i]):
            sid = f"{case}-01Z-00-DX{s + 1}.{rng.integers(16**8):08X}"
            n_p = int(rng.integers(patches[0], patches[1] + 1)) // n_slides[i]
            is_risk = rng.uniform(size=n_p) < frac
            base = centers[rng.integers(0, len(centers), n_p)]
            x = np.where(is_risk[:, None], risk_center, base) + rng.normal(size=(n_p, wsi_dim))
            x = x.astype(np.float32)
            if k_file % 2 == 0:
                torch.save(torch.from_numpy(x), feat_dir / f"{sid}.pt")
            else:
                with h5py.File(feat_dir / f"{sid}.h5", "w") as h:
                    h.create_dataset("features", data=x)
                    h.create_dataset("coords", data=rng.integers(0, 50000, size=(n_p, 2)).astype(np.int32))
            k_file += 1
            rows.append({"case_id": case, "slide_id": f"{sid}.svs"})

    return rows, has_wsi


def _write_reports(rng: np.random.Generator, root: Path, case_ids: list[str], z_rep: np.ndarray, report_coverage: float,
                   ocr_noise: float, omit_field: float) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """True report fields, the noisy report texts (``reports.csv``) and report presence ``[n]``."""
    n = len(case_ids)
    fields = _report_fields(rng, z_rep)
    rep_rows = []
    has_report = rng.uniform(size=n) < report_coverage
    for i, case in enumerate(case_ids):
        if has_report[i]:
            text = _report_text(rng, case, fields.iloc[i], ocr_noise, omit_field)
            rep_rows.append({"pdf_file_name_path": f"{case}.{rng.integers(16**12):012X}.pdf", "ocr_text": text})
    reports_csv = root / "reports.csv"
    pd.DataFrame(rep_rows).to_csv(reports_csv, index=False)

    return reports_csv, fields, has_report


def _write_cohort(root: Path, rows: list[dict], case_ids: list[str], time: np.ndarray, censored: np.ndarray,
                  cancer_type: str, age: np.ndarray, female: np.ndarray, gen_df: pd.DataFrame) -> Path:
    """``cohort.csv``: one row per slide (a patient without slides has one row, empty slide id)."""
    pat = pd.DataFrame(
        {
            "case_id": case_ids,
            "survival_months": time,
            "censorship": censored,
            "oncotree_code": cancer_type,
            "age": age.astype(int),
            "is_female": female,
        }
    )
    pat = pd.concat([pat, gen_df], axis=1)
    cohort = pd.DataFrame(rows).merge(pat, on="case_id", how="left")
    cohort["slide_id"] = cohort["slide_id"].replace("", np.nan)
    cohort = cohort[["case_id", "slide_id"] + [c for c in pat.columns if c != "case_id"]]
    cohort_csv = root / "cohort.csv"
    cohort.to_csv(cohort_csv, index=False)
    return cohort_csv



def make_synthetic_cohort(
    out_dir: Path | str,
    n_patients: int = 300,
    seed: int = 0,
    signal: Literal["all", "reports"] = "all",
    wsi_dim: int = 64,
    patches: tuple[int, int] = (50, 300),
    genes_per_group: int = 8,
    signal_groups: int = 2,
    censoring: float = 0.5,
    report_coverage: float = 0.9,
    genomics_coverage: float = 0.95,
    wsi_coverage: float = 0.97,
    multi_slide_fraction: float = 0.15,
    ocr_noise: float = 0.02,
    omit_field: float = 0.08,
    cancer_type: str = "BLCA",
) -> SyntheticCohort:
    """Write a synthetic cohort under ``out_dir`` and return its paths.

    Files: ``cohort.csv`` (one row per slide: case_id, slide_id, survival_months,
    censorship, oncotree_code, age, is_female, ``<GENE>_rnaseq``), ``reports.csv``
    (``pdf_file_name_path``, ``ocr_text``), ``signatures.csv``, ``features/`` and
    ``truth.csv`` (latent factors and the true report fields, for checks).
    """
    if signal not in ("all", "reports"):
        raise ValueError(f"signal must be 'all' or 'reports', got {signal!r}")
    if not 0 < n_patients <= 9999:
        raise ValueError("n_patients must be in 1..9999 (fake barcodes TCGA-SY-0001..9999)")
    root = Path(out_dir)
    feat_dir = root / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_patients
    case_ids = [f"TCGA-SY-{i + 1:04d}" for i in range(n)]

    z_rep, z_wsi, z_gen = rng.normal(size=(3, n))
    age = np.clip(np.round(66 + 10 * rng.normal(size=n)), 30, 90)
    female = (rng.uniform(size=n) < 0.3).astype(int)
    if signal == "all":
        eta = 1.1 * z_rep + 0.9 * z_wsi + 0.9 * z_gen + 0.15 * (age - 66) / 10
    else:
        eta = 1.8 * z_rep
    t_true = _weibull_times(rng, eta)
    time, censored = _censor(rng, t_true, censoring)

    genes, gen_df = _genomics(rng, n, z_gen, genes_per_group, signal_groups, genomics_coverage)

    rows, has_wsi = _write_slides(rng, feat_dir, case_ids, z_wsi, wsi_dim, patches, multi_slide_fraction, wsi_coverage)

    cohort_csv = _write_cohort(root, rows, case_ids, time, censored, cancer_type, age, female, gen_df)

    sig = pd.DataFrame({fam: genes[g] for g, fam in enumerate(FAMILIES)})
    sig_csv = root / "signatures.csv"
    sig.to_csv(sig_csv, index=False)

    reports_csv, fields, has_report = _write_reports(rng, root, case_ids, z_rep, report_coverage, ocr_noise, omit_field)

    truth = pd.concat(
        [
            pd.DataFrame(
                {"case_id": case_ids, "z_report": z_rep, "z_wsi": z_wsi, "z_gen": z_gen, "eta": eta,
                 "true_time": t_true, "has_report": has_report, "has_wsi": has_wsi}
            ),
            fields,
        ],
        axis=1,
    )
    truth_csv = root / "truth.csv"
    truth.to_csv(truth_csv, index=False)
    out = SyntheticCohort(root, cohort_csv, reports_csv, feat_dir, sig_csv, truth_csv, cancer_type, n, float(censored.mean()))
    meta = {k: str(v) for k, v in asdict(out).items()}
    meta.update({"seed": seed, "signal": signal, "wsi_dim": wsi_dim})
    (root / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def truth_knowledge(cohort: SyntheticCohort, dim: int = 32, seed: int = 0, noise: float = 0.1):
    """In-memory report and PBK embedding tables built from the TRUE report fields.

    A stand-in for the rules backend + sentence encoder when those are not wanted
    (unit tests): each (field, value) pair gets a fixed random unit vector; a
    patient's statements are those vectors plus a little noise.  Patients without
    a report have no entry.  Returns ``(report_table, pbk_table)``.
    """
    truth = pd.read_csv(cohort.truth_csv)
    rng = np.random.default_rng(seed)
    vocab: dict[tuple[str, str], np.ndarray] = {}

    def vec(field: str, value: str) -> np.ndarray:
        if (field, value) not in vocab:
            v = rng.normal(size=dim)
            vocab[(field, value)] = v / np.linalg.norm(v)
        return vocab[(field, value)]

    fields = ["grade", "pT", "pN", "stage", "lvi", "pni", "margin"]
    by_case, statements = {}, {}
    for _, r in truth.iterrows():
        if not bool(r["has_report"]):
            continue
        rows = [vec(f, str(r[f])) for f in fields]
        rows.append(vec("nodes", str(min(int(r["nodes_positive"]), 5))))
        rows.append(vec("size", str(int(min(r["size_cm"], 8)))))
        x = np.stack(rows) + rng.normal(0, noise, size=(len(rows), dim))
        by_case[r["case_id"]] = x.astype(np.float32)
        statements[r["case_id"]] = [f"{f}: {r[f]}" for f in fields] + ["nodes", "size"]
    report = TextTable("truth-reports", f"truth-{dim}", dim, by_case, statements)
    pbk_vecs = rng.normal(size=(6, dim)).astype(np.float32)
    pbk = TextTable("truth-pbk", f"truth-{dim}", dim, {cohort.cancer_type: pbk_vecs})
    return report, pbk
