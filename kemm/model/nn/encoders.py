"""Per-modality encoders: each turns one raw modality into tokens of width ``dim``.

- :class:`WSIProjector`: patch features ``[B, N, D_wsi]`` -> patch tokens ``[B, N, dim]``.
- :class:`SNNBlock` / :class:`GenomicGroupEncoder`: one self-normalising network per
  genomic group (Klambauer et al. 2017, as in MCAT) -> one token per group ``[B, G, dim]``.
- :class:`TextProjector`: statement embeddings ``[B, R, D_txt]`` -> tokens ``[B, R, dim]``
  plus a learned type embedding (report vs prognostic background knowledge).
- :class:`ClinicalEncoder`: optional clinical covariates ``[B, C]`` -> ``[B, dim]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

REPORT_TYPE = 0
PBK_TYPE = 1


class WSIProjector(nn.Module):
    """Linear + ReLU + Dropout from patch-feature width to model width.

    Applied per patch, so it can run chunk by chunk inside streaming attention.
    """

    def __init__(self, in_dim: int, dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D_wsi]`` -> ``[B, N, dim]``."""
        return self.net(x)


def _init_snn_linear(layer: nn.Linear) -> None:
    # SELU's self-normalisation assumes LeCun-normal weights (MCAT's init_max_weights).
    nn.init.normal_(layer.weight, mean=0.0, std=1.0 / math.sqrt(layer.weight.shape[1]))
    nn.init.zeros_(layer.bias)


class SNNBlock(nn.Module):
    """Self-normalising MLP: (Linear -> SELU -> AlphaDropout) x ``n_layers``.

    AlphaDropout, not Dropout: plain dropout would break the zero-mean/unit-variance
    fixed point SELU relies on.
    """

    def __init__(self, in_dim: int, dim: int = 256, dropout: float = 0.25, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(n_layers):
            lin = nn.Linear(width, dim)
            _init_snn_linear(lin)
            layers += [lin, nn.SELU(), nn.AlphaDropout(dropout)]
            width = dim
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, d_in]`` -> ``[B, dim]``."""
        return self.net(x)


class GenomicGroupEncoder(nn.Module):
    """One :class:`SNNBlock` per genomic group; each group becomes one token.

    Args:
        omic_dims: input width of each group, ``[d_1, ..., d_G]`` (non-empty).
    """

    def __init__(self, omic_dims: list[int], dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        if not omic_dims:
            raise ValueError("GenomicGroupEncoder needs at least one genomic group (omic_dims is empty)")
        self.omic_dims = list(omic_dims)
        self.blocks = nn.ModuleList(SNNBlock(d, dim, dropout) for d in omic_dims)

    def forward(self, omics: list[torch.Tensor]) -> torch.Tensor:
        """``G x [B, d_g]`` -> tokens ``[B, G, dim]``."""
        if len(omics) != len(self.blocks):
            raise ValueError(
                f"batch['omics'] has {len(omics)} groups but the model was built for "
                f"{len(self.blocks)} (ModelSpec.omic_dims={self.omic_dims})"
            )
        for g, (x, d) in enumerate(zip(omics, self.omic_dims)):
            if x.shape[-1] != d:
                raise ValueError(f"batch['omics'][{g}] has width {x.shape[-1]}, expected {d} (ModelSpec.omic_dims)")
        return torch.stack([blk(x) for blk, x in zip(self.blocks, omics)], dim=1)


class TextProjector(nn.Module):
    """Linear projection of statement embeddings plus a learned statement-type embedding.

    The type embedding lets downstream attention tell a patient-specific report
    statement from cohort-level prognostic background knowledge (PBK).
    """

    def __init__(self, text_dim: int, dim: int = 256, n_types: int = 2) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, dim)
        # Sentence embeddings are unit-length: without a norm the projected knowledge
        # tokens are tiny next to the WSI/genomic views they are fused with, and the
        # model learns to ignore them (seen on the reports-only synthetic cohort).
        self.norm = nn.LayerNorm(dim)
        self.type_embedding = nn.Embedding(n_types, dim)

    def forward(self, x: torch.Tensor, type_id: int | torch.Tensor) -> torch.Tensor:
        """``[B, R, D_txt]`` -> ``[B, R, dim]``.

        ``type_id``: one kind for every token (REPORT_TYPE or PBK_TYPE), or ``Long[B, R]`` per token
        (a field kind such as pT or grade gets its own learned embedding: the model knows which
        field a sentence states, beside what the sentence says).
        """
        if isinstance(type_id, torch.Tensor):
            return self.norm(self.proj(x)) + self.type_embedding(type_id.clamp(0, self.type_embedding.num_embeddings - 1))
        return self.norm(self.proj(x)) + self.type_embedding.weight[type_id]


class ClinicalEncoder(nn.Module):
    """Optional clinical covariates ``[B, C]`` -> ``[B, dim]``, added to the pooled embedding."""

    def __init__(self, clinical_dim: int, dim: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(clinical_dim, dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` -> ``[B, dim]``; NaN covariates are read as 0 (missing contributes nothing)."""
        return self.net(torch.nan_to_num(x, nan=0.0))
