"""Token-level multi-head attention used by DLF: the authors' code's MHSA block and the paper's NAF fusion.

Attention always runs over tokens (field-like d-dim rows), never over block-summary vectors
(docs/models.md#pitfall-attention-axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scaled: bool
) -> torch.Tensor:
    """softmax(Q_h K_hᵀ [/ √d_h]) V_h per head, heads concatenated back along the feature axis.

    The d features are split into ``num_heads`` heads of d_h = d / num_heads. ``scaled=False`` reproduces the
    authors' code, whose scale flag divides by True == 1.

    Args: q [B, n_q, d], k [B, n_k, d], v [B, n_k, d]. Returns [B, n_q, d].
    """
    batch, n_q, dim = q.shape
    head_dim = dim // num_heads

    def heads(x: torch.Tensor) -> torch.Tensor:  # [B, n, d] -> [B, H, n, d_h]
        return x.view(batch, x.shape[1], num_heads, head_dim).transpose(1, 2)

    # The fused kernel does not keep the [B, H, n_q, n_k] probabilities for backward: faster than an explicit
    # softmax(Q Kᵀ) V on CPU at DLF's sizes (many tokens, d_h = 8) and far less memory.
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=None if scaled else 1.0)
    return out.transpose(1, 2).reshape(batch, n_q, dim)


class QKVProjection(nn.Module):
    """Q, K, V = X W_q, X W_k, X W_v with d x d projections and no bias (as in the authors' code).

    Args: x [B, n, d]. Returns three [B, n, d] tensors.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.query(x), self.key(x), self.value(x)


class MultiHeadSelfAttention(nn.Module):
    """MHSA over the tokens of x, without output projection or residual (the authors' ``DLF_att_cross``).

    Args: x [B, n, d]. Returns [B, n, d].
    """

    def __init__(self, dim: int, num_heads: int, scaled: bool = False) -> None:
        super().__init__()
        self.qkv = QKVProjection(dim)
        self.num_heads = num_heads
        self.scaled = scaled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        return multi_head_attention(q, k, v, self.num_heads, self.scaled)


class NAFLayer(nn.Module):
    """One Network-Aware Attention Fusion layer (DLF paper eqs 10-14, our reconstruction, docs/models.md#dlf-naf).

    For each block b with tokens Z_b:
      Q_b, K_b, V_b = block-wise projections of Z_b                              (eq 10)
      C_b = MHA(Q_b, [K_j; K_k; ...], [V_j; V_k; ...]) over the *other* blocks   (eqs 11-12, inter-block)
      S_b = MHA(Q_b, K_b, V_b)                                                   (eq 13, intra-block)
      H_b = W_a [C_b ‖ S_b] + b_a   (one W_a per block)                           (eq 14)
    Scores are scaled by 1/√d_h. With a single block there are no other blocks, so C_b = 0.

    Args: blocks, a list of [B, n_b, d]. Returns a list of [B, n_b, d] (same token counts).
    """

    def __init__(self, num_blocks: int, dim: int, num_heads: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(QKVProjection(dim) for _ in range(num_blocks))
        self.mix = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(num_blocks))
        self.num_heads = num_heads

    def forward(self, blocks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        qkv = [proj(z) for proj, z in zip(self.projections, blocks, strict=True)]
        fused = []
        for b, (q, k, v) in enumerate(qkv):
            others = [j for j in range(len(qkv)) if j != b]
            if others:
                k_other = torch.cat([qkv[j][1] for j in others], dim=1)
                v_other = torch.cat([qkv[j][2] for j in others], dim=1)
                cross = multi_head_attention(q, k_other, v_other, self.num_heads, scaled=True)
            else:
                cross = torch.zeros_like(q)
            own = multi_head_attention(q, k, v, self.num_heads, scaled=True)
            fused.append(self.mix[b](torch.cat([cross, own], dim=-1)))
        return fused


class NetworkAwareFusion(nn.Module):
    """``num_layers`` stacked :class:`NAFLayer`; layer a+1 attends over layer a's H_b.

    Args: blocks, a list of [B, n_b, d]. Returns the fused list of [B, n_b, d].
    """

    def __init__(self, num_blocks: int, dim: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(NAFLayer(num_blocks, dim, num_heads) for _ in range(num_layers))

    def forward(self, blocks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        fused = list(blocks)
        for layer in self.layers:
            fused = layer(fused)
        return fused
