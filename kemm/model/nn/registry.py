"""Model registry: a string name -> a survival model built from a :class:`ModelSpec`.

Batch contract every model's ``forward(batch) -> dict`` accepts (B patients, padded,
any modality may be missing for any patient)::

    "wsi":         FloatTensor [B, N, D_wsi]  patch features (N may be 0)
    "wsi_mask":    BoolTensor  [B, N]         True = real patch
    "omics":       list of FloatTensor [B, d_g], one per genomic group (may be empty)
    "omics_mask":  BoolTensor  [B]            True = patient has genomics
    "report":      FloatTensor [B, R, D_txt]  report statement embeddings (R may be 0)
    "report_mask": BoolTensor  [B, R]
    "report_kind": LongTensor  [B, R]         statement kind (index into ModelSpec.kinds); optional
    "pbk":         FloatTensor [B, P, D_txt]  prognostic background knowledge embeddings
    "pbk_mask":    BoolTensor  [B, P]
    "pbk_kind":    LongTensor  [B, P]         optional
    "clinical":    FloatTensor [B, C]         optional

Output: ``{"logits": [B, n_bins] discrete-time hazard logits, "aux_loss": scalar, "attn": dict}``.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from kemm.model.nn.baselines import ABMIL, MCAT, SNN, TextMeanMLP, TextMLP, TransMILLayer
from kemm.model.nn.kemm import KEMM

# Accepted by build_model for every model and silently ignored where irrelevant, so a
# harness can pass one hyperparameter dict to every model of an experiment.
COMMON_HPARAMS = ("dim", "dropout", "n_heads", "knowledge_dropout", "align_weight", "max_knowledge_tokens")


@dataclass
class ModelSpec:
    """What the cohort provides; fixes the model's input widths."""

    wsi_dim: int | None  # None = no WSI modality in this cohort
    omic_dims: list[int] = field(default_factory=list)  # [] = no genomics
    text_dim: int | None = None  # None = no knowledge embeddings
    n_bins: int = 4
    clinical_dim: int = 0
    kinds: list[str] = field(default_factory=lambda: ["statement", "pbk"])  # statement-kind vocabulary


def _kemm(knowledge: str) -> Callable[..., nn.Module]:
    def build(spec: ModelSpec, **hp) -> nn.Module:
        return KEMM(spec.wsi_dim, spec.omic_dims, spec.text_dim, spec.n_bins, spec.clinical_dim, knowledge=knowledge,
                    n_kinds=len(spec.kinds), **hp)

    build.target = KEMM  # type: ignore[attr-defined]
    return build


def _wrap(cls: type, *fields: str) -> Callable[..., nn.Module]:
    def build(spec: ModelSpec, **hp) -> nn.Module:
        args = [getattr(spec, f) for f in fields]
        return cls(*args, n_bins=spec.n_bins, clinical_dim=spec.clinical_dim, **hp)

    build.target = cls  # type: ignore[attr-defined]
    return build


def _text(cls: type) -> Callable[..., nn.Module]:
    def build(spec: ModelSpec, **hp) -> nn.Module:
        return cls(spec.text_dim, n_bins=spec.n_bins, clinical_dim=spec.clinical_dim, n_kinds=len(spec.kinds), **hp)

    build.target = cls  # type: ignore[attr-defined]
    return build


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "kemm": _kemm("report+pbk"),
    "kemm_noknow": _kemm("none"),
    "kemm_report": _kemm("report"),
    "kemm_pbk": _kemm("pbk"),
    "abmil": _wrap(ABMIL, "wsi_dim"),
    "snn": _wrap(SNN, "omic_dims"),
    "mcat": _wrap(MCAT, "wsi_dim", "omic_dims"),
    "text": _text(TextMLP),
    "text_meanpool": _wrap(TextMeanMLP, "text_dim"),
    "transmil": _wrap(TransMILLayer, "wsi_dim"),
}

_SPEC_ARGS = {"wsi_dim", "omic_dims", "text_dim", "n_bins", "clinical_dim", "knowledge", "n_kinds", "self"}


def known_models() -> list[str]:
    """Registered model names."""
    return list(_REGISTRY)


def model_hparams(name: str) -> list[str]:
    """Hyperparameters model ``name`` actually uses (besides the ModelSpec)."""
    target = _REGISTRY[name].target  # type: ignore[attr-defined]
    return [p for p in inspect.signature(target.__init__).parameters if p not in _SPEC_ARGS]


COMMON_HPARAM_TYPES: dict[str, Any] = {"dim": int, "dropout": float, "n_heads": int, "knowledge_dropout": float,
                                        "align_weight": float, "max_knowledge_tokens": int | None}


def hparam_types(name: str) -> dict[str, Any]:
    """Type of each hyperparameter model ``name`` accepts (its constructor's annotations; common ones typed too)."""
    target = _REGISTRY[name].target  # type: ignore[attr-defined]
    hints = typing.get_type_hints(target.__init__)
    out = dict(COMMON_HPARAM_TYPES)
    out.update({p: hints[p] for p in model_hparams(name) if p in hints})
    return out


def build_model(name: str, spec: ModelSpec, **hparams) -> nn.Module:
    """Build model ``name`` for ``spec``.

    Common hyperparameters (``COMMON_HPARAMS``) are accepted by every model and ignored
    where the model has no use for them; any other unknown hyperparameter is an error.

    Raises:
        KeyError: unknown ``name`` (the message lists the known names).
        TypeError: a hyperparameter the model does not know.
        ValueError: the spec lacks a modality the model needs (e.g. ``abmil`` without ``wsi_dim``).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(known_models())}")
    accepted = set(model_hparams(name))
    unknown = [k for k in hparams if k not in accepted and k not in COMMON_HPARAMS]
    if unknown:
        raise TypeError(f"model {name!r} got unknown hyperparameters {unknown}; it accepts {sorted(accepted)}")
    return _REGISTRY[name](spec, **{k: v for k, v in hparams.items() if k in accepted})
