"""The KEMM survival model: knowledge tokens -> KECM over WSI and genomics -> hazard logits.

Variants (chosen by ``knowledge``):
- ``"report+pbk"`` (registry name ``kemm``): report statements and PBK statements are the queries;
- ``"report"`` (``kemm_report``) / ``"pbk"`` (``kemm_pbk``): one statement type only;
- ``"none"`` (``kemm_noknow``): learned queries replace the knowledge tokens.

A patient with no knowledge token at all (no report, no PBK) falls back to the learned
queries, so every patient gets a prediction. In training, knowledge dropout removes a
patient's whole report with probability ``knowledge_dropout`` so that inference without
a report is a situation the model has seen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kemm.model.data.batch import Batch, ModelOutput
from kemm.model.nn.encoders import (
    PBK_TYPE,
    REPORT_TYPE,
    ClinicalEncoder,
    GenomicGroupEncoder,
    TextProjector,
    WSIProjector,
)
from kemm.model.nn.kecm import KECM

KNOWLEDGE_MODES = ("report+pbk", "report", "pbk", "none")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, D]``, ``[B, T]`` -> ``[B, D]``; a row with no valid token is 0."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def _info_nce(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows ``[n, D]``; 0 when n < 2 (nothing to contrast)."""
    if z_a.shape[0] < 2:
        return z_a.sum() * 0.0
    logits = F.normalize(z_a, dim=-1) @ F.normalize(z_b, dim=-1).T / temperature
    target = torch.arange(z_a.shape[0], device=z_a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class KEMM(nn.Module):
    """Knowledge-enhanced multimodal survival model.

    Args:
        wsi_dim: patch-feature width, or None (no WSI in this cohort).
        omic_dims: width of each genomic group; ``[]`` = no genomics.
        text_dim: statement-embedding width, or None (no knowledge embeddings; learned queries only).
        n_bins: discrete-time bins (output width).
        clinical_dim: width of ``batch["clinical"]``; 0 = unused.
        knowledge: one of ``KNOWLEDGE_MODES``.
        dim, dropout, n_heads: model width, dropout, attention heads.
        knowledge_dropout: probability of dropping a patient's report tokens in training.
        align_weight: weight of the report-alignment InfoNCE loss (0 = off).
        max_knowledge_tokens: keep at most this many valid knowledge tokens per patient
            (valid tokens first: report, then PBK); None = all.
        n_queries: number of learned queries (the ``none`` mode and the fallback).
        chunk_size, checkpoint_chunks: WSI streaming attention (see ``kecm.StreamingCrossAttention``).
        align_temperature: InfoNCE temperature.
        n_kinds: size of the statement-kind vocabulary (``ModelSpec.kinds``): statement, pbk, and one per
            field kind (pT, grade, ...) or grounded-PBK kind; each kind has a learned type embedding.
    """

    def __init__(
        self,
        wsi_dim: int | None,
        omic_dims: list[int],
        text_dim: int | None,
        n_bins: int = 4,
        clinical_dim: int = 0,
        knowledge: str = "report+pbk",
        dim: int = 256,
        dropout: float = 0.25,
        n_heads: int = 4,
        knowledge_dropout: float = 0.1,
        align_weight: float = 0.0,
        max_knowledge_tokens: int | None = None,
        n_queries: int = 16,
        chunk_size: int | None = 4096,
        checkpoint_chunks: bool = False,
        align_temperature: float = 0.1,
        n_kinds: int = 2,
    ) -> None:
        super().__init__()
        if knowledge not in KNOWLEDGE_MODES:
            raise ValueError(f"knowledge={knowledge!r}; expected one of {KNOWLEDGE_MODES}")
        if wsi_dim is None and not omic_dims:
            raise ValueError("KEMM needs at least one of WSI (wsi_dim) or genomics (omic_dims)")
        if not 0.0 <= knowledge_dropout < 1.0:
            raise ValueError(f"knowledge_dropout must be in [0, 1), got {knowledge_dropout}")
        self.knowledge = knowledge if text_dim is not None else "none"
        self.use_report = self.knowledge in ("report+pbk", "report")
        self.use_pbk = self.knowledge in ("report+pbk", "pbk")
        self.knowledge_dropout = knowledge_dropout
        self.align_weight = align_weight
        self.align_temperature = align_temperature
        self.max_knowledge_tokens = max_knowledge_tokens
        self.return_attn = False  # set True to get cross-attention maps in out["attn"]

        self.wsi_proj = WSIProjector(wsi_dim, dim, dropout) if wsi_dim is not None else None
        self.omic_enc = GenomicGroupEncoder(omic_dims, dim, dropout) if omic_dims else None
        self.text_proj = TextProjector(text_dim, dim, n_types=max(2, n_kinds)) if self.knowledge != "none" else None
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * dim**-0.5)
        self.kecm = KECM(dim, n_heads, dropout, wsi_dim is not None, bool(omic_dims), chunk_size, checkpoint_chunks)
        self.clinical = ClinicalEncoder(clinical_dim, dim, dropout) if clinical_dim > 0 else None
        self.head = nn.Linear(dim, n_bins)
        if align_weight > 0 and self.use_report:
            self.align_text = nn.Linear(text_dim, dim)
            self.align_views = nn.Linear(dim, dim)
        else:
            self.align_text = self.align_views = None

    # -- knowledge tokens -------------------------------------------------------------
    def _knowledge_tokens(self, batch: Batch, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Report/PBK tokens plus learned fallback queries -> (``[B, T, dim]``, mask ``[B, T]``)."""
        toks, masks = [], []
        if self.use_report:
            rep, rmask = batch["report"], batch["report_mask"].bool()
            if self.training and self.knowledge_dropout > 0:
                keep = torch.rand(b, device=rmask.device) >= self.knowledge_dropout
                rmask = rmask & keep[:, None]
            toks.append(self.text_proj(rep, batch.get("report_kind", REPORT_TYPE)))
            masks.append(rmask)
        if self.use_pbk:
            toks.append(self.text_proj(batch["pbk"], batch.get("pbk_kind", PBK_TYPE)))
            masks.append(batch["pbk_mask"].bool())
        if toks:
            tok, mask = torch.cat(toks, 1), torch.cat(masks, 1)
            tok, mask = self._truncate(tok, mask)
        else:
            tok = self.queries.new_zeros((b, 0, self.queries.shape[1]))
            mask = torch.zeros((b, 0), dtype=torch.bool, device=self.queries.device)
        # Learned queries are valid only for patients without any knowledge token.
        has_k = mask.any(dim=1)
        learned = self.queries.unsqueeze(0).expand(b, -1, -1)
        lmask = (~has_k)[:, None].expand(b, self.queries.shape[0])
        return torch.cat([tok, learned], 1), torch.cat([mask, lmask], 1)

    def _truncate(self, tok: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep at most ``max_knowledge_tokens`` tokens, valid ones first (stable order)."""
        cap = self.max_knowledge_tokens
        if cap is None or tok.shape[1] <= cap:
            return tok, mask
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :cap]
        tok = torch.gather(tok, 1, order[..., None].expand(-1, -1, tok.shape[-1]))
        return tok, torch.gather(mask, 1, order)

    # -- alignment -------------------------------------------------------------------
    def _align_loss(self, batch: Batch, fused: dict, qmask: torch.Tensor) -> torch.Tensor:
        """InfoNCE between each pooled modality view and the patient's mean report embedding."""
        rmask = batch["report_mask"].bool()
        has_rep = rmask.any(dim=1)
        z_r = self.align_text(_masked_mean(batch["report"], rmask))
        losses = []
        for view, present in ((fused["view_wsi"], fused["present_wsi"]), (fused["view_omic"], fused["present_omic"])):
            sel = has_rep & present
            if sel.any():
                z_m = self.align_views(_masked_mean(view, qmask))
                losses.append(_info_nce(z_m[sel], z_r[sel], self.align_temperature))
        if not losses:
            return self.head.weight.sum() * 0.0
        return self.align_weight * torch.stack(losses).mean()

    # -- forward ---------------------------------------------------------------------
    def forward(self, batch: Batch) -> ModelOutput:
        """``batch`` (see kemm.model.nn.registry) -> ``{"logits": [B, n_bins], "aux_loss": [], "attn": {...}}``."""
        omics = batch.get("omics") or []
        b = batch_size(batch)
        qtok, qmask = self._knowledge_tokens(batch, b)
        if self.wsi_proj is not None:
            check_width(batch, "wsi", self.wsi_proj.net[0].in_features)
        omic_tok = self.omic_enc(omics) if self.omic_enc is not None and omics else None
        fused = self.kecm(
            qtok,
            qmask,
            wsi=batch.get("wsi") if self.wsi_proj is not None else None,
            wsi_mask=batch.get("wsi_mask"),
            omic=omic_tok,
            omic_mask=batch.get("omics_mask"),
            wsi_encoder=self.wsi_proj,
            return_attn=self.return_attn,
        )
        h = fused["pooled"]
        if self.clinical is not None and "clinical" in batch:
            h = h + self.clinical(batch["clinical"])
        aux = h.new_zeros(())
        if self.align_text is not None and self.use_report:
            aux = self._align_loss(batch, fused, qmask)
        attn = {"pool": fused["pool_attn"], "query_mask": qmask}
        for k in ("wsi_attn", "omic_attn"):
            if k in fused:
                attn[k.removesuffix("_attn")] = fused[k]
        return {"logits": self.head(h), "aux_loss": aux, "attn": attn}


def check_width(batch: Batch, key: str, expected: int) -> None:
    """Fail early, naming the key, when a batch tensor's last dimension is not the spec's."""
    x = batch.get(key)
    if x is not None and x.shape[-1] != expected:
        raise ValueError(f"batch[{key!r}] has feature width {x.shape[-1]}, but the model was built for {expected} (ModelSpec)")


def batch_size(batch: Batch) -> int:
    """B from whichever batch entry is present (every modality may be absent)."""
    for key in ("wsi_mask", "omics_mask", "report_mask", "pbk_mask", "clinical"):
        if key in batch and batch[key] is not None:
            return int(batch[key].shape[0])
    raise ValueError("batch has none of wsi_mask/omics_mask/report_mask/pbk_mask; cannot infer batch size")
