"""The batch contract between the collate function and every model's ``forward``.

``collate`` (``dataset.py``) builds a :class:`Batch`; every model in ``kemm.model.nn``
takes one and returns a :class:`ModelOutput`.  B patients, padded; any modality may
be missing for any patient (its mask is all-False and its padded positions hold
zeros that no model may read).  Keys of modalities the experiment does not
configure are absent, hence ``total=False``.

Imports: torch only.
"""
from __future__ import annotations

from typing import TypedDict

import torch


class Batch(TypedDict, total=False):
    """A padded batch of B patients.

    Shapes::

        case_id      list[str]                 [B]
        wsi          FloatTensor [B, N, D_wsi]  patch features (N >= 1; one-bag batches are not padded)
        wsi_mask     BoolTensor  [B, N]         True = real patch
        omics        list of FloatTensor [B, d_g], one per genomic group
        omics_mask   BoolTensor  [B]            True = patient has genomics
        report       FloatTensor [B, R, D_txt]  report statement embeddings
        report_mask  BoolTensor  [B, R]
        report_kind  LongTensor  [B, R]         statement kind: index into ModelSpec.kinds (statement, pbk,
                                                a field such as pT or grade, a grounded-PBK kind); 0 where padded
        pbk          FloatTensor [B, P, D_txt]  prognostic background knowledge embeddings
        pbk_mask     BoolTensor  [B, P]
        pbk_kind     LongTensor  [B, P]
        clinical     FloatTensor [B, C]         covariates the model receives (standardised on the training fold)
        label        LongTensor  [B]            survival bin of the follow-up time
        censorship   FloatTensor [B]            1 = censored
        time         FloatTensor [B]            follow-up time
        event        LongTensor  [B]            1 = event observed
    """

    case_id: list[str]
    wsi: torch.Tensor
    wsi_mask: torch.Tensor
    omics: list[torch.Tensor]
    omics_mask: torch.Tensor
    report: torch.Tensor
    report_mask: torch.Tensor
    report_kind: torch.Tensor
    pbk: torch.Tensor
    pbk_mask: torch.Tensor
    pbk_kind: torch.Tensor
    clinical: torch.Tensor
    label: torch.Tensor
    censorship: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor


class ModelOutput(TypedDict):
    """What every model's ``forward(batch)`` returns.

    ``logits`` ``[B, n_bins]`` discrete-time hazard logits; ``aux_loss`` a scalar added to
    the survival loss (0 where a model has none); ``attn`` named attention weights for
    explanation (may be empty).
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor
    attn: dict[str, torch.Tensor]
