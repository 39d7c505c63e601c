"""Encoders: shapes, type embeddings, missing values and width checks."""
from __future__ import annotations

import pytest
import torch

from kemm.model.nn.encoders import (
    PBK_TYPE,
    REPORT_TYPE,
    ClinicalEncoder,
    GenomicGroupEncoder,
    SNNBlock,
    TextProjector,
    WSIProjector,
)


def test_wsi_projector_is_per_patch() -> None:
    torch.manual_seed(0)
    p = WSIProjector(12, dim=8, dropout=0.0).eval()
    x = torch.randn(2, 5, 12)
    y = p(x)
    assert y.shape == (2, 5, 8) and (y >= 0).all()
    torch.testing.assert_close(p(x[:, 2:3]), y[:, 2:3])  # chunking patches changes nothing


def test_snn_block_keeps_activations_normalised() -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        y = SNNBlock(64, dim=256, dropout=0.0, n_layers=2).eval()(torch.randn(4096, 64))
    assert abs(float(y.mean())) < 0.15 and abs(float(y.std()) - 1.0) < 0.2  # SELU fixed point (LeCun init)


def test_genomic_groups_become_tokens_and_bad_widths_are_named() -> None:
    enc = GenomicGroupEncoder([3, 5], dim=8, dropout=0.0).eval()
    assert enc([torch.randn(2, 3), torch.randn(2, 5)]).shape == (2, 2, 8)
    with pytest.raises(ValueError, match="has 1 groups"):
        enc([torch.randn(2, 3)])
    with pytest.raises(ValueError, match=r"omics'\]\[1\] has width 4, expected 5"):
        enc([torch.randn(2, 3), torch.randn(2, 4)])
    with pytest.raises(ValueError, match="at least one genomic group"):
        GenomicGroupEncoder([])


def test_text_projector_type_embedding_separates_report_from_pbk() -> None:
    torch.manual_seed(0)
    t = TextProjector(6, dim=8)
    x = torch.randn(1, 3, 6)
    diff = t(x, PBK_TYPE) - t(x, REPORT_TYPE)
    torch.testing.assert_close(diff, (t.type_embedding.weight[PBK_TYPE] - t.type_embedding.weight[REPORT_TYPE]).expand_as(diff))


def test_clinical_encoder_reads_nan_as_zero() -> None:
    enc = ClinicalEncoder(3, dim=4, dropout=0.0).eval()
    torch.testing.assert_close(enc(torch.tensor([[1.0, float("nan"), 2.0]])), enc(torch.tensor([[1.0, 0.0, 2.0]])))
