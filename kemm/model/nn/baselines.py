"""Baselines run in the same harness as KEMM.

Torch models (``forward(batch) -> {"logits", "aux_loss", "attn"}``):
- :class:`ABMIL` — gated-attention MIL over WSI patches (Ilse et al. 2018).
- :class:`SNN` — self-normalising network per genomic group, concatenated (MCAT's SNN baseline).
- :class:`MCAT` — genomic groups as queries co-attending into the WSI bag, then a transformer
  and attention pooling per modality, concatenated (Chen et al. 2021).
- :class:`TextMLP` — MLP on mean-pooled report and PBK statement embeddings.
- :class:`TransMILLayer` — one full (quadratic) self-attention layer over patches with a
  class token, TransMIL-style; used by the speed benchmark.

The linear baseline (CoxPH on clinical covariates) lives in ``kemm.model.linear``.
"""

from __future__ import annotations

import torch
from torch import nn

from kemm.model.data.batch import Batch, ModelOutput
from kemm.model.nn.encoders import (
    PBK_TYPE,
    REPORT_TYPE,
    ClinicalEncoder,
    GenomicGroupEncoder,
    SNNBlock,
    TextProjector,
    WSIProjector,
)
from kemm.model.nn.kecm import GatedAttentionPool, StreamingCrossAttention
from kemm.model.nn.kemm import _masked_mean, batch_size, check_width


class _Head(nn.Module):
    """Optional clinical late fusion + ``Linear(dim, n_bins)``."""

    def __init__(self, dim: int, n_bins: int, clinical_dim: int, dropout: float) -> None:
        super().__init__()
        self.clinical = ClinicalEncoder(clinical_dim, dim, dropout) if clinical_dim > 0 else None
        self.out = nn.Linear(dim, n_bins)

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``[B, dim]`` -> logits ``[B, n_bins]``."""
        if self.clinical is not None and "clinical" in batch:
            h = h + self.clinical(batch["clinical"])
        return self.out(h)


def _require(cond: bool, model: str, what: str) -> None:
    if not cond:
        raise ValueError(f"model {model!r} needs {what} in the ModelSpec")


class ABMIL(nn.Module):
    """Gated attention MIL over WSI patches; a patient without a slide pools to zeros."""

    def __init__(self, wsi_dim: int | None, n_bins: int = 4, clinical_dim: int = 0, dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        _require(wsi_dim is not None, "abmil", "wsi_dim")
        self.wsi_dim = wsi_dim
        self.proj = WSIProjector(wsi_dim, dim, dropout)
        self.pool = GatedAttentionPool(dim, dropout=dropout)
        self.head = _Head(dim, n_bins, clinical_dim, dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_width(batch, "wsi", self.wsi_dim)
        pooled, w = self.pool(self.proj(batch["wsi"]), batch["wsi_mask"].bool())
        return {"logits": self.head(pooled, batch), "aux_loss": pooled.new_zeros(()), "attn": {"wsi": w}}


class SNN(nn.Module):
    """SNN per genomic group -> concatenation -> SNN fusion; a patient without genomics gets zeros."""

    def __init__(self, omic_dims: list[int], n_bins: int = 4, clinical_dim: int = 0, dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        _require(bool(omic_dims), "snn", "omic_dims")
        self.groups = GenomicGroupEncoder(omic_dims, dim, dropout)
        self.fuse = SNNBlock(len(omic_dims) * dim, dim, dropout, n_layers=1)
        self.head = _Head(dim, n_bins, clinical_dim, dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        tok = self.groups(batch["omics"])  # [B, G, dim]
        present = batch["omics_mask"].bool().to(tok.dtype)[:, None]
        h = self.fuse(tok.flatten(1)) * present
        return {"logits": self.head(h, batch), "aux_loss": h.new_zeros(()), "attn": {}}


class MCAT(nn.Module):
    """MCAT-style genomic-guided co-attention.

    Genomic group tokens ``[B, G, dim]`` query the WSI bag (streaming, linear in N); the
    co-attended path tokens and the genomic tokens each go through a transformer layer
    and gated attention pooling; the two embeddings are concatenated.

    Fallbacks: a patient without genomics has no queries, so its path embedding comes from
    gated attention over its patches (ABMIL) and its genomic embedding is 0; a patient
    without a slide has a path embedding of 0. With ``wsi_dim=None`` the model is the
    genomic branch alone (self-attention over group tokens); with ``omic_dims=[]`` it is
    the ABMIL branch alone.
    """

    def __init__(
        self,
        wsi_dim: int | None,
        omic_dims: list[int],
        n_bins: int = 4,
        clinical_dim: int = 0,
        dim: int = 256,
        dropout: float = 0.25,
        n_heads: int = 4,
        chunk_size: int | None = 4096,
    ) -> None:
        super().__init__()
        if wsi_dim is None and not omic_dims:
            raise ValueError("model 'mcat' needs wsi_dim or omic_dims in the ModelSpec")
        self.wsi_dim = wsi_dim
        self.wsi = WSIProjector(wsi_dim, dim, dropout) if wsi_dim is not None else None
        self.omic = GenomicGroupEncoder(omic_dims, dim, dropout) if omic_dims else None
        both = self.wsi is not None and self.omic is not None
        self.coattn = StreamingCrossAttention(dim, n_heads, chunk_size) if both else None

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(dim, n_heads, 2 * dim, dropout, batch_first=True, norm_first=True)

        self.path_tf = layer() if both else None
        self.path_pool = GatedAttentionPool(dim, dropout=dropout) if both else None
        self.mil_pool = GatedAttentionPool(dim, dropout=dropout) if self.wsi is not None else None
        self.omic_tf = layer() if self.omic is not None else None
        self.omic_pool = GatedAttentionPool(dim, dropout=dropout) if self.omic is not None else None
        n_parts = int(self.wsi is not None) + int(self.omic is not None)
        self.fuse = nn.Sequential(nn.Linear(n_parts * dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.head = _Head(dim, n_bins, clinical_dim, dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        b = batch_size(batch)
        parts, attn = [], {}
        g_tok = has_g = None
        if self.omic is not None:
            g_tok = self.omic(batch["omics"])
            has_g = batch["omics_mask"].bool()
            g_mask = has_g[:, None].expand(b, g_tok.shape[1])
            # Rows without genomics attend to themselves only to avoid an all-masked softmax;
            # they are zeroed by the pooling mask right after.
            g_mix = self.omic_tf(g_tok, src_key_padding_mask=~(g_mask | ~has_g[:, None]))
            h_g, attn["omic_pool"] = self.omic_pool(g_mix, g_mask)
        if self.wsi is not None:
            check_width(batch, "wsi", self.wsi_dim)
            wsi, wmask = batch["wsi"], batch["wsi_mask"].bool()
            patches = self.wsi(wsi)
            h_mil, attn["wsi_pool"] = self.mil_pool(patches, wmask)
            if self.coattn is not None:
                co, pres, _ = self.coattn(g_tok, patches, wmask)  # [B, G, dim]
                q_mask = (has_g & pres)[:, None].expand(b, co.shape[1])
                co = self.path_tf(co, src_key_padding_mask=~(q_mask | ~q_mask.any(1, keepdim=True)))
                h_co, attn["path_pool"] = self.path_pool(co, q_mask)
                # Genomics present -> co-attention path; absent -> plain MIL pooling.
                h_path = torch.where(has_g[:, None], h_co, h_mil)
            else:
                h_path = h_mil
            parts.append(h_path)
        if self.omic is not None:
            parts.append(h_g)
        h = self.fuse(torch.cat(parts, dim=-1))
        return {"logits": self.head(h, batch), "aux_loss": h.new_zeros(()), "attn": attn}


class TextMeanMLP(nn.Module):
    """MLP on the mean report and mean PBK statement embedding plus presence flags (the first text model).

    Kept as the ``text_meanpool`` ablation: unit-length sentence embeddings averaged over a patient's
    statements are small, nearly collinear inputs, and this model stayed near a constant prediction on
    real cohorts (experiments/tcga/RESULTS.md).
    """

    def __init__(self, text_dim: int | None, n_bins: int = 4, clinical_dim: int = 0, dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        _require(text_dim is not None, "text_meanpool", "text_dim")
        self.net = nn.Sequential(
            nn.Linear(2 * text_dim + 2, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.head = _Head(dim, n_bins, clinical_dim, dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        rmask, pmask = batch["report_mask"].bool(), batch["pbk_mask"].bool()
        rep, pbk = _masked_mean(batch["report"], rmask), _masked_mean(batch["pbk"], pmask)
        flags = torch.stack([rmask.any(1), pmask.any(1)], dim=1).to(rep.dtype)
        h = self.net(torch.cat([rep, pbk, flags], dim=-1))
        return {"logits": self.head(h, batch), "aux_loss": h.new_zeros(()), "attn": {}}


class TextMLP(nn.Module):
    """Text-only survival model over knowledge tokens: the same token projection as KEMM, no modality.

    Each statement is projected with :class:`TextProjector` (LayerNorm + learned kind embedding: a
    field sentence such as "pT3 ..." is known to be the pT token), tokens are pooled with gated
    attention over the valid report and PBK tokens, then an MLP and the survival head.
    """

    def __init__(
        self,
        text_dim: int | None,
        n_bins: int = 4,
        clinical_dim: int = 0,
        dim: int = 256,
        dropout: float = 0.25,
        n_kinds: int = 2,
    ) -> None:
        super().__init__()
        _require(text_dim is not None, "text", "text_dim")
        self.proj = TextProjector(text_dim, dim, n_types=max(2, n_kinds))
        self.pool = GatedAttentionPool(dim, dropout=dropout)
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.head = _Head(dim, n_bins, clinical_dim, dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        rep = self.proj(batch["report"], batch.get("report_kind", REPORT_TYPE))
        pbk = self.proj(batch["pbk"], batch.get("pbk_kind", PBK_TYPE))
        tok = torch.cat([rep, pbk], dim=1)
        mask = torch.cat([batch["report_mask"].bool(), batch["pbk_mask"].bool()], dim=1)
        pooled, w = self.pool(tok, mask)
        h = self.net(pooled)
        return {"logits": self.head(h, batch), "aux_loss": h.new_zeros(()), "attn": {"pool": w, "query_mask": mask}}


class TransMILLayer(nn.Module):
    """TransMIL-style: class token + one full self-attention layer over patches (O(N^2))."""

    def __init__(self, wsi_dim: int | None, n_bins: int = 4, clinical_dim: int = 0, dim: int = 256, dropout: float = 0.25, n_heads: int = 4) -> None:
        super().__init__()
        _require(wsi_dim is not None, "transmil", "wsi_dim")
        self.wsi_dim = wsi_dim
        self.proj = WSIProjector(wsi_dim, dim, dropout)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.layer = nn.TransformerEncoderLayer(dim, n_heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = _Head(dim, n_bins, clinical_dim, dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_width(batch, "wsi", self.wsi_dim)
        x, mask = self.proj(batch["wsi"]), batch["wsi_mask"].bool()
        b = x.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        # The class token is always valid, so no row is fully masked.
        mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        h = self.norm(self.layer(x, src_key_padding_mask=~mask)[:, 0])
        # Without a slide the class token only sees itself: zero it so absence contributes nothing.
        h = h * mask[:, 1:].any(1, keepdim=True).to(h.dtype)
        return {"logits": self.head(h, batch), "aux_loss": h.new_zeros(()), "attn": {}}
