"""Knowledge-Enhanced Cross-Modal (KECM) attention.

Knowledge tokens (queries, ``[B, Q, dim]``) attend SEPARATELY into WSI patch tokens
(``[B, N, dim]``) and genomic group tokens (``[B, G, dim]``). Query ``q`` therefore
yields two views of the patient that are aligned token by token under the same piece
of knowledge. The views are fused per token (a presence-aware gate), mixed by one
small transformer layer over the knowledge tokens, and pooled with gated attention.

Cost is linear in ``N``: :class:`StreamingCrossAttention` walks the keys in chunks with
an online (log-sum-exp) softmax, so a ``[B, heads, Q, N]`` score tensor never exists
in one piece. With ``checkpoint_chunks=True`` each chunk is recomputed in backward, so
training memory stays ``O(chunk_size)`` instead of ``O(N)`` as well.

Masking rules, used by every module here:
- a masked key gets exactly zero attention weight;
- a query with no valid key yields an exact zero output and ``present=False``
  (never NaN), so fusion can fall back to the other view.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# Finite stand-in for -inf: keeps exp/where free of NaN in both forward and backward.
_NEG = -1e30


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over valid positions only.

    Args:
        scores: any shape, e.g. ``[B, Q]``.
        mask: bool, broadcastable to ``scores``; True = valid.

    Returns:
        Weights of ``scores``' shape; masked positions are exactly 0, each slice sums to 1
        over its valid positions, and a slice with no valid position is all 0.
    """
    mask = mask.expand_as(scores)
    if scores.shape[dim] == 0:
        return scores * 0.0  # nothing to attend to (e.g. N = 0)
    s = scores.masked_fill(~mask, _NEG)
    m = s.detach().amax(dim=dim, keepdim=True)
    p = torch.exp(s - m) * mask
    return p / p.sum(dim=dim, keepdim=True).clamp_min(1e-30)


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al. 2018, ABMIL) over valid tokens.

    ``a_i = w^T (tanh(V h_i) * sigmoid(U h_i))``; weights are a masked softmax of ``a``.
    """

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or dim
        self.v = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(hidden, 1, bias=False)  # a bias cancels in the softmax

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h`` ``[B, T, dim]``, ``mask`` ``[B, T]`` -> (pooled ``[B, dim]``, weights ``[B, T]``).

        A row with no valid token pools to exact zeros.
        """
        a = self.w(self.v(h) * self.u(h)).squeeze(-1)
        weights = masked_softmax(a, mask.bool())
        return torch.einsum("bt,btd->bd", weights, h), weights


class StreamingCrossAttention(nn.Module):
    """Multi-head cross attention, masked, streamed over key chunks (online softmax).

    Args:
        dim: model width (queries and keys after ``key_encoder``).
        n_heads: attention heads; ``dim`` must be divisible by it.
        chunk_size: keys per chunk; ``None`` = all keys in one chunk (reference path).
        checkpoint_chunks: recompute each chunk in backward (linear-and-small memory in training).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int = 4,
        chunk_size: int | None = 4096,
        checkpoint_chunks: bool = False,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} must be divisible by n_heads={n_heads}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.chunk_size = chunk_size
        self.checkpoint_chunks = checkpoint_chunks
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, dim]`` -> ``[B, H, T, dh]``."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _kv(self, x: torch.Tensor, key_encoder: Callable[[torch.Tensor], torch.Tensor] | None):
        if key_encoder is not None:
            x = key_encoder(x)
        k, v = self.kv_proj(x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def use_folded(self, n_queries: int) -> bool:
        """Whether to fold the key/value projections into the queries (see :meth:`forward`).

        Per key, the folded path costs ``2 H Q dim`` multiply-adds, projecting keys costs
        ``2 dim^2 + 2 Q dim``; folding wins while ``H Q < dim + Q``.
        """
        return self.n_heads * n_queries < self.dim + n_queries

    def _fold_queries(self, q: torch.Tensor) -> torch.Tensor:
        """Per-head queries ``[B, H, Q, dh]`` -> folded queries ``[B, H*Q, dim]``.

        ``s = (W_k x + b_k)_h . q_h / sqrt(dh) = x . (W_k,h^T q_h) / sqrt(dh) + const(q)``; the
        constant is the same for every key, so it cancels in the softmax and is dropped.
        """
        b, h, nq, dh = q.shape
        w_k = self.kv_proj.weight[: self.dim].view(h, dh, self.dim)
        qk = torch.einsum("bhqd,hde->bhqe", q, w_k) * dh**-0.5
        return qk.reshape(b, h * nq, self.dim)

    def _unfold_values(self, acc: torch.Tensor, nq: int) -> torch.Tensor:
        """Normalised ``sum_n p_n x_n`` ``[B, H*Q, dim]`` -> per-head values ``[B, H, Q, dh]``.

        ``sum_n p_n (W_v x_n + b_v) = W_v (sum_n p_n x_n) + b_v`` because the weights sum to 1.
        """
        b = acc.shape[0]
        h, dh = self.n_heads, self.head_dim
        w_v = self.kv_proj.weight[self.dim :].view(h, dh, self.dim)
        b_v = self.kv_proj.bias[self.dim :].view(1, h, 1, dh)
        return torch.einsum("bhqe,hde->bhqd", acc.view(b, h, nq, self.dim), w_v) + b_v

    def _chunk_stats(self, q, x, mask, key_encoder):
        """Local softmax statistics of one key chunk.

        Folded path: ``q`` ``[B, H*Q, dim]``, ``x`` ``[B, c, D]``, ``mask`` ``[B, c]`` ->
        (max ``[B, H*Q]``, sum of exp ``[B, H*Q]``, exp-weighted keys ``[B, H*Q, dim]``).
        Projected path: ``q`` ``[B, H, Q, dh]`` -> (``[B, H, Q]``, ``[B, H, Q]``, weighted
        values ``[B, H, Q, dh]``).
        """
        if q.dim() == 4:
            return self._chunk_stats_projected(q, x, mask, key_encoder)
        if key_encoder is not None:
            x = key_encoder(x)
        s = torch.matmul(x, q.transpose(1, 2))  # [B, c, H*Q]: one GEMM for all heads, no copies
        if bool(mask.all()):
            # Every key valid (the usual single-slide bag): no masking work at all.
            m = s.detach().amax(dim=1)
            p = torch.exp(s - m.unsqueeze(1))
        else:
            valid = mask.unsqueeze(-1)
            # The max only stabilises exp; the result is invariant to it, so no gradient needed.
            m = s.detach().masked_fill(~valid, _NEG).amax(dim=1)
            p = torch.exp((s - m.unsqueeze(1)).masked_fill(~valid, _NEG)) * valid
        return m, p.sum(dim=1), torch.matmul(p.transpose(1, 2), x)

    def _chunk_stats_projected(self, q, x, mask, key_encoder):
        """Reference path: project keys and values per chunk (used when many queries)."""
        k, v = self._kv(x, key_encoder)
        s = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5  # [B, H, Q, c]
        valid = mask[:, None, None, :]
        m = s.detach().masked_fill(~valid, _NEG).amax(dim=-1)
        p = torch.exp((s - m.unsqueeze(-1)).masked_fill(~valid, _NEG)) * valid
        return m, p.sum(dim=-1), torch.matmul(p, v)

    def _bounds(self, n: int) -> list[tuple[int, int]]:
        size = n if self.chunk_size is None else self.chunk_size
        return [(s, min(s + size, n)) for s in range(0, n, max(size, 1))]

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        key_mask: torch.Tensor,
        key_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        return_attn: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Attend ``queries`` into ``keys``.

        With few queries (:meth:`use_folded`, e.g. KEMM's knowledge tokens, MCAT's genomic
        groups) the key and value projections are folded into the queries, so the keys are
        never projected: scores are one GEMM ``x [c, dim] @ q~ [dim, H*Q]`` per chunk and the
        values are projected once, after the softmax-weighted sum. Mathematically identical
        to projecting every key (tested to float tolerance), and ~2x cheaper per key.

        Args:
            queries: ``[B, Q, dim]``.
            keys: ``[B, N, D_k]`` (``N`` may be 0); ``D_k = dim`` unless ``key_encoder``
                maps ``D_k -> dim`` (applied chunk by chunk, so raw patch features can be
                projected lazily).
            key_mask: bool ``[B, N]``, True = real key.
            return_attn: also return head-averaged weights ``[B, Q, N]`` (inspection only:
                this is O(Q N) memory, computed without gradient).

        Returns:
            (out ``[B, Q, dim]``, present ``[B]`` bool = the patient has >= 1 valid key,
            attn ``[B, Q, N]`` or None). Rows with no valid key are exactly 0.
        """
        b, nq, _ = queries.shape
        n = keys.shape[1]
        key_mask = key_mask.bool()
        q = self._split(self.q_proj(queries))
        folded = self.use_folded(nq)
        if folded:
            q = self._fold_queries(q)
        stat_shape = q.shape[:-1]  # [B, H*Q] folded, [B, H, Q] projected
        m_run = q.new_full(stat_shape, _NEG)
        l_run = q.new_zeros(stat_shape)
        acc = q.new_zeros(q.shape)
        for s, e in self._bounds(n):
            xc, mc = keys[:, s:e], key_mask[:, s:e]
            if self.checkpoint_chunks and torch.is_grad_enabled():
                m_c, l_c, a_c = checkpoint(self._chunk_stats, q, xc, mc, key_encoder, use_reentrant=False)
            else:
                m_c, l_c, a_c = self._chunk_stats(q, xc, mc, key_encoder)
            # Online softmax merge: rescale both partial sums to the new running max.
            m_new = torch.maximum(m_run, m_c)
            r_old, r_new = torch.exp(m_run - m_new), torch.exp(m_c - m_new)
            l_run = l_run * r_old + l_c * r_new
            acc = acc * r_old.unsqueeze(-1) + a_c * r_new.unsqueeze(-1)
            m_run = m_new
        # With >= 1 valid key the max term contributes exp(0) = 1, so l_run >= 1; with none,
        # acc = 0 and the clamp turns 0/0 into an exact 0.
        acc = acc / l_run.clamp_min(1.0).unsqueeze(-1)
        if folded:
            acc = self._unfold_values(acc, nq)
        out = acc.transpose(1, 2).reshape(b, nq, self.dim)
        present = key_mask.any(dim=1) if n > 0 else key_mask.new_zeros(b)
        out = self.out_proj(out) * present[:, None, None].to(out.dtype)
        attn = None
        if return_attn:
            stats = (m_run, l_run) if folded else (m_run.flatten(1), l_run.flatten(1))
            attn = self._weights(q, keys, key_mask, key_encoder, *stats, nq)
        return out, present, attn

    @torch.no_grad()
    def _weights(self, q, keys, key_mask, key_encoder, m_run, l_run, nq: int) -> torch.Tensor:
        """Second pass: normalised weights, averaged over heads, ``[B, Q, N]``.

        ``m_run`` / ``l_run`` are ``[B, H*Q]`` (head-major) in both paths.
        """
        b, h = keys.shape[0], self.n_heads
        parts = []
        for s, e in self._bounds(keys.shape[1]):
            if q.dim() == 3:
                x = keys[:, s:e] if key_encoder is None else key_encoder(keys[:, s:e])
                sc = torch.matmul(q, x.transpose(1, 2))  # [B, H*Q, c]
            else:
                k, _ = self._kv(keys[:, s:e], key_encoder)
                sc = (torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5).flatten(1, 2)
            valid = key_mask[:, None, s:e]
            p = torch.exp((sc - m_run.unsqueeze(-1)).masked_fill(~valid, _NEG)) * valid
            p = p / l_run.clamp_min(1.0).unsqueeze(-1)
            parts.append(p.view(b, h, nq, e - s).mean(dim=1))
        if not parts:
            return q.new_zeros((b, nq, 0))
        return torch.cat(parts, dim=-1)


class KECM(nn.Module):
    """Knowledge-enhanced cross-modal attention block.

    Args:
        dim, n_heads, dropout: model width, heads, dropout.
        use_wsi / use_omic: which modality branches exist in this cohort.
        chunk_size, checkpoint_chunks: see :class:`StreamingCrossAttention`.
    """

    def __init__(
        self,
        dim: int = 256,
        n_heads: int = 4,
        dropout: float = 0.25,
        use_wsi: bool = True,
        use_omic: bool = True,
        chunk_size: int | None = 4096,
        checkpoint_chunks: bool = False,
    ) -> None:
        super().__init__()
        self.use_wsi, self.use_omic = use_wsi, use_omic
        self.wsi_attn = StreamingCrossAttention(dim, n_heads, chunk_size, checkpoint_chunks) if use_wsi else None
        self.omic_attn = StreamingCrossAttention(dim, n_heads, None) if use_omic else None
        # Per-token, per-channel gate between the two views, conditioned on the query too.
        self.gate = nn.Linear(3 * dim, dim)
        self.fuse_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.mixer = nn.TransformerEncoderLayer(
            dim, n_heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.pool = GatedAttentionPool(dim, dropout=dropout)

    def forward(
        self,
        queries: torch.Tensor,
        query_mask: torch.Tensor,
        wsi: torch.Tensor | None = None,
        wsi_mask: torch.Tensor | None = None,
        omic: torch.Tensor | None = None,
        omic_mask: torch.Tensor | None = None,
        wsi_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        return_attn: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Fuse WSI and genomics under knowledge queries.

        Args:
            queries: ``[B, Q, dim]`` knowledge (or learned) tokens; ``query_mask`` ``[B, Q]``.
            wsi: ``[B, N, D]`` patch tokens (raw if ``wsi_encoder`` is given); ``wsi_mask`` ``[B, N]``.
            omic: ``[B, G, dim]`` genomic group tokens; ``omic_mask`` ``[B]`` (patient has genomics).

        Returns:
            dict with ``pooled`` ``[B, dim]``, ``tokens`` ``[B, Q, dim]``, ``view_wsi`` /
            ``view_omic`` ``[B, Q, dim]`` (zeros when absent), ``present_wsi`` /
            ``present_omic`` ``[B]``, ``pool_attn`` ``[B, Q]`` and, if ``return_attn``,
            ``wsi_attn`` ``[B, Q, N]`` / ``omic_attn`` ``[B, Q, G]``.
        """
        b = queries.shape[0]
        query_mask = query_mask.bool()
        zeros = torch.zeros_like(queries)
        absent = query_mask.new_zeros(b)
        out: dict[str, torch.Tensor] = {}
        view_w, pres_w = zeros, absent
        if self.wsi_attn is not None and wsi is not None and wsi_mask is not None:
            view_w, pres_w, a = self.wsi_attn(queries, wsi, wsi_mask, wsi_encoder, return_attn)
            if a is not None:
                out["wsi_attn"] = a
        view_g, pres_g = zeros, absent
        if self.omic_attn is not None and omic is not None and omic_mask is not None:
            key_mask = omic_mask.bool()[:, None].expand(b, omic.shape[1])
            view_g, pres_g, a = self.omic_attn(queries, omic, key_mask, None, return_attn)
            if a is not None:
                out["omic_attn"] = a
        # Presence-aware gate: both views -> learned mix; one view -> that view alone;
        # none -> zero (the residual query still carries the knowledge).
        g = torch.sigmoid(self.gate(torch.cat([view_w, view_g, queries], dim=-1)))
        both = (pres_w & pres_g)[:, None, None]
        g = torch.where(both, g, pres_w[:, None, None].to(g.dtype).expand_as(g))
        fused = g * view_w + (1.0 - g) * view_g
        tokens = self.fuse_norm(queries + self.drop(fused))
        # A row with no valid query would make the transformer's softmax all -inf (NaN);
        # let such rows attend to themselves, then zero them at pooling.
        has_q = query_mask.any(dim=1)
        safe_mask = query_mask | ~has_q[:, None]
        tokens = self.mixer(tokens, src_key_padding_mask=~safe_mask)
        pooled, w = self.pool(tokens, query_mask)
        out.update(
            pooled=pooled,
            tokens=tokens,
            view_wsi=view_w,
            view_omic=view_g,
            present_wsi=pres_w,
            present_omic=pres_g,
            pool_attn=w,
        )
        return out
