"""Experiment configuration: one YAML file, validated by Pydantic v2.

Every section forbids unknown keys; a typo is an error that names its dotted
path (``data.columns.cae_id``) and the file.  Relative paths are resolved
against the current working directory when the experiment runs (the resolved,
absolute config is written into the run directory).

Sections (see ``experiments/template.yaml`` for a commented example)::

    name, output_dir
    data:       cohort table, format, column mapping, endpoint, splits, features, genomics
    knowledge:  report / pbk sources, encoder, cache_dir
    models:     [{name, hparams}]
    train:      epochs, lr, weight_decay, batch_size, grad_accum, seed, alpha, n_bins, ...
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kemm.model.errors import ConfigError

log = logging.getLogger(__name__)

# Names of refined-report covariates (kemm.knowledge.REPORT_COVARIATES); kept literal so the
# config loads without importing the knowledge half. tests/ check that both lists agree.
REPORT_FIELD_NAMES = (
    "stage", "grade", "pT", "pN", "pM", "nodes_positive", "nodes_examined", "tumor_size", "margin", "lvi", "pni",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnMap(_Strict):
    """Names of the cohort-table columns (defaults fit MCAT/PORPOISE/SurvPath tables)."""

    case_id: str = "case_id"
    slide_id: str | None = "slide_id"
    time: str | None = Field(None, description="Survival time; default from the endpoint (survival_months[_dss|_pfi]).")
    censorship: str | None = Field(None, description="1 = censored (MCAT convention). Give this or `event`.")
    event: str | None = Field(None, description="1 = event observed. Used instead of `censorship` when set.")
    cancer_type: str | None = "oncotree_code"
    age: str | None = "age"
    sex: str | None = "is_female"


class GenomicsConfig(_Strict):
    groups: Literal["signatures", "all", "pathways", "none"] = Field(
        "all",
        description="signatures: gene families of a signatures.csv (MCAT); all: every *_rnaseq/_cnv/_mut "
        "column as one group; pathways: a pathway table; none: no genomics.",
    )
    signatures: str | None = Field(None, description="signatures.csv (columns = family names, values = genes).")
    pathways: str | None = Field(None, description="pathway table: genes x pathways 0/1, or pathways as columns of genes.")
    modalities: list[Literal["rnaseq", "cnv", "mut"]] = Field(default_factory=lambda: ["rnaseq", "cnv", "mut"])
    min_group_size: int = Field(1, ge=1, description="groups with fewer matched columns are dropped.")

    @model_validator(mode="after")
    def _needs_table(self) -> "GenomicsConfig":
        if self.groups == "signatures" and not self.signatures:
            raise ValueError("genomics.groups is 'signatures' but genomics.signatures (a signatures.csv path) is not set")
        if self.groups == "pathways" and not self.pathways:
            raise ValueError("genomics.groups is 'pathways' but genomics.pathways (a pathway table path) is not set")
        return self


class DataConfig(_Strict):
    cohort: str = Field(..., description="cohort table: .csv, .tsv or a MCAT/PORPOISE .csv.zip")
    format: Literal["auto", "mcat", "survpath", "csv"] = "auto"
    columns: ColumnMap = Field(default_factory=ColumnMap)
    endpoint: Literal["OS", "DSS", "PFI"] = "OS"
    cancer_type: str | None = Field(None, description="cancer type for every patient when the table has no such column")
    splits_dir: str | None = Field(None, description="folder with splits_0.csv ... splits_{k}.csv (`,train,val`)")
    n_folds: int = Field(5, ge=2)
    split_seed: int = 0
    features_dir: str | None = Field(None, description="folder with per-slide <slide>.pt / <slide>.h5 patch features")
    missing_slides: Literal["error", "mask"] = "error"
    max_patches: int | None = Field(None, ge=1, description="random patch cap per patient, training only")
    cache_bags: bool = Field(True, description="keep loaded bags in memory (small cohorts)")
    genomics: GenomicsConfig = Field(default_factory=GenomicsConfig)
    clinical: list[str] = Field(
        default_factory=lambda: ["age", "sex", "stage", "grade"],
        description="CoxPH covariates: cohort columns (age, sex, ...) and refined-report fields "
        "(stage, grade, pT, pN, nodes_positive, ...) when knowledge.report is set",
    )
    reports: list[str] = Field(
        default_factory=list,
        description="pathology report files (CSV/JSONL, tcga-path-report layout: case = first 12 characters of "
        "pdf_file_name_path, text = ocr_text) whose raw text coxph_text_genomics reads; [] = none",
    )
    model_clinical: list[str] = Field(
        default_factory=lambda: ["age", "sex"],
        description="cohort columns every neural model receives (standardised with training-fold statistics, "
        "missing values imputed from the training fold with a missing indicator); [] = none. Report-derived "
        "fields are knowledge, not allowed here: opt in per model with models[].clinical",
    )

    @field_validator("model_clinical")
    @classmethod
    def _no_report_fields(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if n in REPORT_FIELD_NAMES]
        if bad:
            raise ValueError(
                f"{bad} are refined-report fields (knowledge); data.model_clinical takes cohort columns only "
                "(e.g. age, sex). To give a model report fields, set `clinical:` on that model entry"
            )
        return v


def _as_list(v: str | list[str] | None) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


class KnowledgeConfig(_Strict):
    report: str | list[str] | None = Field(
        None,
        description="knowledge source(s) of per-case statements: refined reports, derived field sentences "
        "(`kemm-knowledge derive fields`); several sources are concatenated per case",
    )
    pbk: str | list[str] | None = Field(
        None,
        description="prognostic background knowledge source(s): keyed per cancer type (static PBK) or per case "
        "(`kemm-knowledge derive grounded-pbk`); several are concatenated",
    )
    encoder: str | None = Field(None, description="embedding encoder id; None = the source's only/default encoder")
    kind_values: bool = Field(
        True,
        description="field tokens keep their value category as their kind (pT:3, nodes:4+: one learned embedding "
        "per category); false = one kind per field (pT), the fields-v1 behaviour, for ablations",
    )
    cache_dir: str = "knowledge_cache"

    @property
    def report_sources(self) -> list[str]:
        return _as_list(self.report)

    @property
    def pbk_sources(self) -> list[str]:
        return _as_list(self.pbk)


class ModelEntry(_Strict):
    name: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    clinical: list[str] | None = Field(
        None,
        description="covariates this neural model receives (overrides data.model_clinical); may name "
        "refined-report fields (stage, grade, ...): an explicit opt-in that mixes knowledge into the clinical path",
    )
    label: str | None = Field(None, description="name in tables/run dirs when one model appears twice")
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="training settings of this model only, over the experiment's `train` (e.g. {lr: 1.0e-3, "
        "epochs: 40}); a neural model's recipe as part of its row, so recipes can be compared as rows",
    )

    @property
    def key(self) -> str:
        return self.label or self.name

    def train_config(self, base: "TrainConfig") -> "TrainConfig":
        """``base`` with this model's ``train`` overrides, validated (ConfigError-ready ValueError)."""
        if not self.train:
            return base
        merged = {**base.model_dump(), **self.train}
        for sub in ("early_stopping", "linear_part"):
            if isinstance(self.train.get(sub), dict):
                merged[sub] = {**getattr(base, sub).model_dump(), **self.train[sub]}
        try:
            return TrainConfig.model_validate(merged)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ValueError(f"model {self.key!r}: train.{loc}: {err['msg']} (got {err.get('input')!r})") from None


class EarlyStopping(_Strict):
    enabled: bool = False
    inner_val_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    patience: int = Field(5, ge=1)


class LinearPartConfig(_Strict):
    """A penalised CoxPH beside the network (``kemm.model.run.linear_part``); its blocks are the
    ``coxph_text_genomics`` ones. ``mixture``: the two models' survival curves are averaged,
    ``weight`` on the linear one; ``offset``: its linear predictor is added to the network's hazard
    logits and the network learns the residual."""

    enabled: bool = False
    mode: Literal["mixture", "offset"] = "mixture"
    weight: float = Field(0.5, gt=0.0, lt=1.0, description="mixture: the linear model's share of the survival curve")
    clinical: list[str] = Field(default_factory=lambda: ["age", "sex"], description="cohort columns of the linear part")
    text: bool = Field(True, description="TF-IDF/SVD of the raw report text (needs data.reports)")
    genomics: bool = Field(True, description="PCA of the genomic columns")
    knowledge: bool = Field(
        False, description="the model's own knowledge tokens: mean token embedding (PCA) and which token kinds the case has",
    )
    folds: int = Field(5, ge=2, le=20, description="offset: cross-fitting parts for the training patients' offsets")

    @model_validator(mode="after")
    def _some_block(self) -> "LinearPartConfig":
        if self.enabled and not (self.text or self.genomics or self.knowledge):
            raise ValueError("linear_part needs text, genomics or knowledge (a clinical-only Cox model is coxph's job)")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(1, ge=1, description="patients per step")
    grad_accum: int = Field(1, ge=1, description="steps per optimizer update")
    seed: int = 0
    alpha: float = Field(0.0, ge=0.0, le=1.0, description="NLL weight on uncensored patients (MCAT alpha)")
    n_bins: int = Field(4, ge=2)
    num_threads: int | None = Field(None, ge=1, description="torch threads; None = 1 on <= 2 cores, else min(4, cores / 2)")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    ensemble: int = Field(
        1, ge=1, le=32,
        description="networks trained per fold with seeds seed, seed+1000, ...; their hazards are averaged",
    )
    linear_part: LinearPartConfig = Field(default_factory=LinearPartConfig)
    progress: bool = True


class ExperimentConfig(_Strict):
    name: str = "experiment"
    output_dir: str | None = Field(None, description="run directory; default runs/<name>")
    data: DataConfig
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    models: list[ModelEntry] = Field(..., min_length=1)
    main_model: str | None = Field(None, description="model of the KM plot; default: kemm if present, else the first")
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[ModelEntry]) -> list[ModelEntry]:
        keys = [m.key for m in v]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"model names must be unique (give a `label` to repeat a model): {dup}")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    @property
    def main(self) -> str:
        keys = [m.key for m in self.models]
        if self.main_model:
            if self.main_model not in keys:
                raise ConfigError(f"main_model {self.main_model!r} is not in models {keys}")
            return self.main_model
        return "kemm" if "kemm" in keys else keys[0]

    def identity_settings(self) -> dict[str, Any]:
        """The settings that define a run: data, knowledge, train, without display-only ones (``DISPLAY_ONLY``)."""
        d = self.model_dump(mode="json", exclude={"output_dir", "name", "models", "main_model"})
        for key in DISPLAY_ONLY:
            d["train"].pop(key, None)
        return d

    def identity(self) -> str:
        """Hash of the data, knowledge and train settings (models are checked per fold, so a run can grow)."""
        return hashlib.sha256(json.dumps(self.identity_settings(), sort_keys=True).encode()).hexdigest()[:16]


# train settings that change how a run looks or how fast it goes, never its numbers
DISPLAY_ONLY = ("progress", "num_threads")


def setting_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts, as ``key: old -> new``."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb, key = a.get(k), b.get(k), f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += setting_differences(va, vb, key + ".")
        elif va != vb:
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key (check the spelling; experiments/template.yaml lists every key)")
        elif e["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        else:
            lines.append(f"  {path}: {e['msg']} (got {e.get('input')!r})")
    return f"{source}: invalid experiment config\n" + "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "knowledge.report=src2"]`` -> nested update (values parsed as YAML)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a mapping")
            node = nxt
        node[parts[-1]] = _scalar(value)
    return data


def _scalar(text: str) -> Any:
    v = yaml.safe_load(text)
    if isinstance(v, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(v)
        except ValueError:
            pass
    return v


DATA_ROOT_ENV = "KEMM_DATA_ROOT"
DATA_ROOT = "{data_root}"
# Models that read knowledge embeddings; a benchmark cohort config trained without a knowledge
# source keeps only the others (base.yaml lists kemm and kemm_noknow for `kemm train`).
KNOWLEDGE_MODELS = frozenset({"kemm", "kemm_report", "kemm_pbk", "text", "text_meanpool"})


def load_config(path: Path | str, overrides: list[str] | None = None, data_root: Path | str | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment YAML.

    A cohort config of a benchmark folder (a file with a ``benchmark:`` section, e.g.
    ``experiments/tcga/blca.yaml``) is merged over the ``base.yaml`` beside it, its
    ``benchmark:`` section is used only for the report files (``data.reports``), and models
    that need knowledge are left out when no knowledge source is given. ``{data_root}`` in any
    string is replaced by ``data_root`` (or ``$KEMM_DATA_ROOT``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    data = _read_yaml(path)
    cohort_file = isinstance(data, dict) and "benchmark" in data
    if cohort_file:
        data = _merge_cohort_file(path, data)
    data = apply_overrides(data or {}, overrides or [])
    data = fill_data_root(data, path, data_root)
    if cohort_file:
        data = _drop_knowledge_models(data, path)
    return parse_config(data, str(path))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _merge_cohort_file(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A benchmark cohort file merged over its sibling base.yaml, without the ``benchmark:`` sections."""
    bench = data.pop("benchmark") or {}
    if not isinstance(bench, dict):
        raise ConfigError(f"{path}: benchmark: expected a mapping (cohort, cancer_type, reports)")
    base_path = path.parent / "base.yaml"
    if base_path.is_file() and base_path.resolve() != path.resolve():
        base = _read_yaml(base_path) or {}
        if not isinstance(base, dict):
            raise ConfigError(f"{base_path}: expected a YAML mapping at the top level")
        base.pop("benchmark", None)
        data = _deep_merge(base, data)
    reports = bench.get("reports") or []
    if reports and isinstance(data.get("data"), dict) and "reports" not in data["data"]:
        data["data"]["reports"] = [f"{DATA_ROOT}/{r}" for r in reports]
    return data


def fill_data_root(data: Any, path: Path, data_root: Path | str | None) -> Any:
    """Every ``{data_root}`` replaced by ``data_root`` / ``$KEMM_DATA_ROOT``; an error naming the key if unset."""
    used = _keys_with(data, DATA_ROOT)
    if not used:
        return data
    root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise ConfigError(
            f"{path}: {used[0]} uses {DATA_ROOT}; give the raw data folder with --data-root DIR "
            f"(e.g. ../shared/data/raw) or set ${DATA_ROOT_ENV}"
        )
    if not Path(root).is_dir():
        raise ConfigError(f"{path}: data root {root} (for {DATA_ROOT} in {used[0]}) is not a folder")
    return _replace(data, str(root))


def _keys_with(obj: Any, needle: str, prefix: str = "") -> list[str]:
    if isinstance(obj, str):
        return [prefix or "<root>"] if needle in obj else []
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in _keys_with(v, needle, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(obj, list):
        return [k for i, v in enumerate(obj) for k in _keys_with(v, needle, f"{prefix}[{i}]")]
    return []


def _replace(obj: Any, root: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(DATA_ROOT, root)
    if isinstance(obj, dict):
        return {k: _replace(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace(v, root) for v in obj]
    return obj


def _drop_knowledge_models(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Without knowledge sources, a cohort config trains only the models that need none."""
    k = data.get("knowledge") or {}
    models = data.get("models")
    if not isinstance(k, dict) or k.get("report") or k.get("pbk") or not isinstance(models, list):
        return data
    keep = [m for m in models if not (isinstance(m, dict) and m.get("name") in KNOWLEDGE_MODELS)]
    dropped = [m.get("label") or m.get("name") for m in models if isinstance(m, dict) and m not in keep]
    if dropped and keep:
        log.warning("%s: no knowledge source given (knowledge.report / knowledge.pbk), so %s %s left out; "
                    "add e.g. --set knowledge.report=[SOURCE] to train %s", path, ", ".join(dropped),
                    "is" if len(dropped) == 1 else "are", "it" if len(dropped) == 1 else "them")
        data["models"] = keep
    return data


def resolve_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy with every path made absolute (what gets written to the run dir)."""
    c = cfg.model_copy(deep=True)

    def _abs(p: str | None) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else p

    c.data.cohort = _abs(c.data.cohort)
    c.data.splits_dir = _abs(c.data.splits_dir)
    c.data.features_dir = _abs(c.data.features_dir)
    c.data.genomics.signatures = _abs(c.data.genomics.signatures)
    c.data.genomics.pathways = _abs(c.data.genomics.pathways)
    c.knowledge.cache_dir = _abs(c.knowledge.cache_dir)
    c.data.reports = [_abs(r) or r for r in c.data.reports]
    c.output_dir = _abs(str(cfg.run_dir))
    return c


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def knowledge_label(cfg: ExperimentConfig, model: str | None = None) -> str:
    """The knowledge a run (or one of its models) reads, for titles: ``report blca-rules; pbk pbk-curated``."""
    names = {m.key: m.name for m in cfg.models}
    if model is not None and names.get(model, model) not in KNOWLEDGE_MODELS:
        return "none (this model reads no knowledge)"
    parts = [f"{kind} {', '.join(srcs)}" for kind, srcs in
             (("report", cfg.knowledge.report_sources), ("pbk", cfg.knowledge.pbk_sources)) if srcs]
    if parts and cfg.knowledge.encoder:
        parts.append(f"encoder {cfg.knowledge.encoder}")
    return "; ".join(parts) or "none"


def model_clinical(entry: ModelEntry, cfg: ExperimentConfig) -> list[str]:
    """Covariates a neural model receives: its own ``clinical:`` list, else ``data.model_clinical``."""
    return list(entry.clinical) if entry.clinical is not None else list(cfg.data.model_clinical)
