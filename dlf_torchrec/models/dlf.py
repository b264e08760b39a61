"""DLF (Wang et al., SIGIR'25): stacked rank-aware interaction layers over field tokens, in two forms.

``form: authors`` builds what the authors' released code runs (docs/models.md#dlf-authors-form):

* high-rank block (code ``fmb``):     S_C = E (Eᵀ W_CI) [n, r] -> flatten -> LN -> Linear-BN-ReLU-Dropout-Linear -> Z_C
* low-rank block (code ``fmb_x0``):   S_L = X̃0 (Eᵀ W_LI), X̃0 = P_x0ᵀ X0 (identity when n = F), same path -> Z_L
* implicit block (code ``lcb``):      Z_D = W_Dᵀ E, token compression without bias or activation
* attention block (``naf: true``, code ``DLF_att_cross``): unscaled MHSA over E -> flatten -> LN -> MLP -> Z_A
* E' = LN_d([Z_C; Z_L; Z_D (; Z_A)] + R(E)), R a learned token projection when the counts differ, else identity
* head: vec(E^(L+1)) -> MLP ``head_hidden`` (default [512], BN) -> Linear -> logit

``form: paper`` builds our reading of the paper (docs/models.md#dlf-paper-form, #dlf-naf, #dlf-gate):

* low-rank block:  S_L = X0 (Eᵀ W_LI) [F, r] (raw X0, as in the figure) -> LN -> block MLP -> σ -> Z_L
* high-rank block: S_C = E (Eᵀ W_CI) [n, r] -> LN -> block MLP -> σ -> Z_C
* implicit block:  vec(E) -> block MLP -> ReLU -> Z_D ("MLP with ReLU")
  The figure's single W_·O projections are realised as the code's 2-layer block MLP (our assumption).
* NAF (``naf: true``): ``attention_layers`` stacked layers of block-wise Q/K/V, inter-block cross-attention over the
  other blocks' tokens, intra-block self-attention, H_b = W_a [C_b ‖ S_b] + b_a, scaled by 1/√d_h
  (:mod:`dlf_torchrec.models.attention`); Z = [Z_C; Z_L; Z_D; H_C; H_L; H_D] (eq 15).
* gated residual, OUR ASSUMPTION (eq 9 is lost): E' = LN_d(Z + (G + ε) ⊙ R(E)), G ∈ R^{n_out×d} learnable and
  initialised to 1 - ε, so the gate starts at the plain residual LN_d(Z + R(E)).
* head: a single Linear on vec(E^(L+1)) (eq 16) unless ``head_hidden`` is set.

Ablations (paper Table 3), same switch in both forms:

* ``gate: false``: paper -> plain residual LN_d(Z + R(E)); authors -> no residual at all, E' = LN_d(Z) (the code's
  projected residual is what stands in for the paper's gate, docs/models.md#dlf-gate).
* ``rli: false`` ("w/o RLI"): the explicit high- and low-rank blocks are replaced by implicit blocks with the same
  token counts (paper: separate MLP+ReLU blocks; authors: linear token compressions), so only the explicit rank-aware
  interactions disappear while token counts, NAF and the residual stay as they are.
* ``naf: false``: paper -> the block outputs are concatenated without attention; authors -> no attention block
  (``DLF_default``). Unset (``null``) means the form's own default: paper true, authors false.

Token bookkeeping (docs/models.md#dlf-token-counts): layer 1 sees n = F tokens, every later layer n = n_out, where
n_out = 2 n_F + n_D (+ n_A for authors with attention), doubled in the paper form with NAF (block outputs plus
their fused versions). The head sees n_out · d features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dlf_torchrec.models.attention import MultiHeadSelfAttention, NetworkAwareFusion
from dlf_torchrec.models.layers import MLP, activation, init_linear_
from dlf_torchrec.models.registry import register_over_arch


@dataclass
class DLFConfig:
    # authors: the released code (docs/models.md#dlf-two-forms; better on Frappe, benchmarks/results/);
    # paper: our reading.
    form: Literal["paper", "authors"] = "authors"
    # L stacked DLF layers (authors' code 3, paper Fig. 4 best 8).
    num_layers: int = 3
    rank: int = 24
    # n_F (high- and low-rank blocks), n_D (implicit), n_A (authors' attention block); main_run forces 32.
    num_tokens_high: int = 32
    num_tokens_low: int = 32
    num_tokens_implicit: int = 32
    num_tokens_attention: int = 32
    block_hidden: int = 512
    # Head MLP hidden sizes before the final Linear; null -> form default (authors [512], paper [] = eq 16).
    head_hidden: list[int] | None = None
    dropout: float = 0.0
    batch_norm: bool = True
    num_heads: int = 2
    # Stacked NAF attention layers per DLF layer (paper form only; paper Fig. 4 best 2).
    attention_layers: int = 2
    # Ablations (paper Table 3); see the module docstring for what each means per form.
    gate: bool = True
    rli: bool = True
    naf: bool | None = None
    # ε of the assumed gate (G + ε) ⊙ R(E) (paper form).
    gate_eps: float = 1e-5

    def validate(self) -> None:
        for key in ("num_layers", "rank", "num_tokens_high", "num_tokens_low", "num_tokens_implicit",
                    "num_tokens_attention", "block_hidden", "num_heads", "attention_layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.head_hidden is not None and any(u < 1 for u in self.head_hidden):
            raise ValueError(f"head_hidden: sizes must be >= 1, got {self.head_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.gate_eps < 0:
            raise ValueError(f"gate_eps: must be >= 0, got {self.gate_eps}")

    @property
    def use_naf(self) -> bool:
        return self.naf if self.naf is not None else self.form == "paper"

    @property
    def head_units(self) -> list[int]:
        if self.head_hidden is not None:
            return list(self.head_hidden)
        return [512] if self.form == "authors" else []


# ------------------------------------------------------------------------------------------------ building blocks


class TokenMix(nn.Module):
    """Z = Wᵀ X: learned mixing along the token axis, no bias (W_D, W_R, P_x0). Kaiming-uniform init.

    Args: x [B, n_in, d]. Returns [B, n_out, d].
    """

    def __init__(self, num_tokens_in: int, num_tokens_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tokens_in, num_tokens_out))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnd,nm->bmd", x, self.weight)


class RankInteraction(nn.Module):
    """S = X (Eᵀ W): entry (i, k) = Σ_j ⟨x_i, e_j⟩ W[j, k]. Kaiming-uniform W.

    Args: e [B, n, d] (the layer input), x [B, m, d] (E itself or X0). Returns [B, m, r].
    """

    def __init__(self, num_tokens: int, rank: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_tokens, rank))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x @ (e.transpose(1, 2) @ self.weight)


class TokenProjection(nn.Module):
    """flatten -> (LN) -> Linear -> (BN) -> ReLU -> (Dropout) -> Linear -> reshape to tokens -> (activation).

    Args: x [B, ...] with in_features elements per sample. Returns [B, num_tokens, dim].
    """

    def __init__(
        self,
        in_features: int,
        num_tokens: int,
        dim: int,
        hidden: int,
        batch_norm: bool,
        dropout: float,
        layer_norm: bool = True,
        out_act: str | None = None,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features) if layer_norm else nn.Identity()
        self.mlp = MLP(in_features, [hidden], num_tokens * dim, batch_norm, dropout)
        self.act = activation(out_act) if out_act is not None else nn.Identity()
        self.num_tokens, self.dim = num_tokens, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mlp(self.norm(x.flatten(1)))
        return self.act(z.view(-1, self.num_tokens, self.dim))


# Every block maps (E [B, n, d], X0 [B, F, d]) -> [B, num_tokens, d].


class HighRankBlock(nn.Module):
    """E interacting with itself: S_C = E (Eᵀ W_CI) [B, n, r] -> token projection -> Z_C [B, n_F, d]."""

    def __init__(self, num_tokens_in: int, rank: int, projection: TokenProjection) -> None:
        super().__init__()
        self.interaction = RankInteraction(num_tokens_in, rank)
        self.projection = projection
        self.num_tokens = projection.num_tokens

    def forward(self, e: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.projection(self.interaction(e, e))


class LowRankBlock(nn.Module):
    """E interacting with X0: S_L = X̃0 (Eᵀ W_LI) -> token projection -> Z_L [B, n_L, d].

    X̃0 = P_x0ᵀ X0 [B, n, d] when ``x0_projection`` is given (authors, layers with n != F), else X0 [B, F, d].
    """

    def __init__(
        self, num_tokens_in: int, rank: int, projection: TokenProjection, x0_projection: TokenMix | None = None
    ) -> None:
        super().__init__()
        self.x0_projection = x0_projection
        self.interaction = RankInteraction(num_tokens_in, rank)
        self.projection = projection
        self.num_tokens = projection.num_tokens

    def forward(self, e: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        x = self.x0_projection(x0) if self.x0_projection is not None else x0
        return self.projection(self.interaction(e, x))


class LinearCompressBlock(nn.Module):
    """Authors' implicit block: Z_D = W_Dᵀ E [B, n_D, d], no bias, no activation."""

    def __init__(self, num_tokens_in: int, num_tokens: int) -> None:
        super().__init__()
        self.compress = TokenMix(num_tokens_in, num_tokens)
        self.num_tokens = num_tokens

    def forward(self, e: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.compress(e)


class ImplicitMLPBlock(nn.Module):
    """Paper's implicit block: Z_D = ReLU(MLP(vec E)) [B, n_D, d]."""

    def __init__(self, projection: TokenProjection) -> None:
        super().__init__()
        self.projection = projection
        self.num_tokens = projection.num_tokens

    def forward(self, e: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.projection(e)


class AttentionBlock(nn.Module):
    """Authors' ``DLF_att_cross`` block: unscaled MHSA over E -> flatten -> LN -> MLP -> Z_A [B, n_A, d].

    The code flattens d-major; we flatten token-major, which only permutes the LN + Linear inputs.
    """

    def __init__(self, dim: int, num_heads: int, projection: TokenProjection) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(dim, num_heads, scaled=False)
        self.projection = projection
        self.num_tokens = projection.num_tokens

    def forward(self, e: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.projection(self.attention(e))


class ResidualNorm(nn.Module):
    """E' = LN_d(Z + (G + ε) ⊙ R(E)) ("gated"), LN_d(Z + R(E)) ("plain") or LN_d(Z) ("none").

    R is a learned token projection n_in -> n_out when the counts differ, else the identity. G [n_out, d] starts
    at 1 - ε, i.e. at the plain residual.

    Args: z [B, n_out, d], e [B, n_in, d]. Returns [B, n_out, d].
    """

    def __init__(
        self, num_tokens_in: int, num_tokens_out: int, dim: int, mode: Literal["gated", "plain", "none"], eps: float
    ) -> None:
        super().__init__()
        self.mode = mode
        self.eps = eps
        needs_projection = mode != "none" and num_tokens_in != num_tokens_out
        self.projection = TokenMix(num_tokens_in, num_tokens_out) if needs_projection else None
        self.gate = nn.Parameter(torch.full((num_tokens_out, dim), 1.0 - eps)) if mode == "gated" else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return self.norm(z)
        residual = self.projection(e) if self.projection is not None else e
        if self.gate is not None:
            residual = (self.gate + self.eps) * residual
        return self.norm(z + residual)


class DLFLayer(nn.Module):
    """One DLF layer: blocks -> (NAF: append the fused blocks) -> Z = concat over tokens -> residual + LN.

    Args: e [B, n_in, d], x0 [B, F, d]. Returns [B, num_tokens_out, d].
    """

    def __init__(self, blocks: list[nn.Module], fusion: NetworkAwareFusion | None, residual: ResidualNorm) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.fusion = fusion
        self.residual = residual

    def forward(self, e: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        z = [block(e, x0) for block in self.blocks]
        if self.fusion is not None:
            z = z + self.fusion(z)
        return self.residual(torch.cat(z, dim=1), e)


# ------------------------------------------------------------------------------------------------ layer assembly


def block_token_counts(cfg: DLFConfig) -> list[int]:
    """Output tokens of each block in one layer, in concatenation order (high, low, implicit (, attention))."""
    counts = [cfg.num_tokens_high, cfg.num_tokens_low, cfg.num_tokens_implicit]
    if cfg.form == "authors" and cfg.use_naf:
        counts.append(cfg.num_tokens_attention)
    return counts


def layer_output_tokens(cfg: DLFConfig) -> int:
    """n_out of every layer: the block tokens, plus their NAF-fused copies in the paper form."""
    total = sum(block_token_counts(cfg))
    return 2 * total if cfg.form == "paper" and cfg.use_naf else total


def _authors_blocks(n_in: int, num_fields: int, dim: int, cfg: DLFConfig) -> list[nn.Module]:
    def projection(in_features: int, num_tokens: int) -> TokenProjection:
        return TokenProjection(in_features, num_tokens, dim, cfg.block_hidden, cfg.batch_norm, cfg.dropout)

    if cfg.rli:
        x0_projection = TokenMix(num_fields, n_in) if n_in != num_fields else None
        blocks: list[nn.Module] = [
            HighRankBlock(n_in, cfg.rank, projection(n_in * cfg.rank, cfg.num_tokens_high)),
            LowRankBlock(n_in, cfg.rank, projection(n_in * cfg.rank, cfg.num_tokens_low), x0_projection),
        ]
    else:
        blocks = [LinearCompressBlock(n_in, cfg.num_tokens_high), LinearCompressBlock(n_in, cfg.num_tokens_low)]
    blocks.append(LinearCompressBlock(n_in, cfg.num_tokens_implicit))
    if cfg.use_naf:
        blocks.append(AttentionBlock(dim, cfg.num_heads, projection(n_in * dim, cfg.num_tokens_attention)))
    return blocks


def _paper_blocks(n_in: int, num_fields: int, dim: int, cfg: DLFConfig) -> list[nn.Module]:
    def projection(in_features: int, num_tokens: int, layer_norm: bool, out_act: str) -> TokenProjection:
        return TokenProjection(
            in_features, num_tokens, dim, cfg.block_hidden, cfg.batch_norm, cfg.dropout, layer_norm, out_act
        )

    def implicit(num_tokens: int) -> ImplicitMLPBlock:
        return ImplicitMLPBlock(projection(n_in * dim, num_tokens, False, "relu"))

    if cfg.rli:
        blocks: list[nn.Module] = [
            HighRankBlock(n_in, cfg.rank, projection(n_in * cfg.rank, cfg.num_tokens_high, True, "sigmoid")),
            LowRankBlock(n_in, cfg.rank, projection(num_fields * cfg.rank, cfg.num_tokens_low, True, "sigmoid")),
        ]
    else:
        blocks = [implicit(cfg.num_tokens_high), implicit(cfg.num_tokens_low)]
    blocks.append(implicit(cfg.num_tokens_implicit))
    return blocks


def build_layer(n_in: int, num_fields: int, dim: int, cfg: DLFConfig) -> DLFLayer:
    """One DLF layer reading n_in tokens and writing :func:`layer_output_tokens` tokens."""
    n_out = layer_output_tokens(cfg)
    if cfg.form == "authors":
        blocks = _authors_blocks(n_in, num_fields, dim, cfg)
        fusion = None
        mode: Literal["gated", "plain", "none"] = "plain" if cfg.gate else "none"
    else:
        blocks = _paper_blocks(n_in, num_fields, dim, cfg)
        fusion = NetworkAwareFusion(len(blocks), dim, cfg.num_heads, cfg.attention_layers) if cfg.use_naf else None
        mode = "gated" if cfg.gate else "plain"
    return DLFLayer(blocks, fusion, ResidualNorm(n_in, n_out, dim, mode, cfg.gate_eps))


# ------------------------------------------------------------------------------------------------ over-arch


@register_over_arch("dlf", DLFConfig)
class DLF(nn.Module):
    """DLF over-arch: ``num_layers`` stacked DLF layers over the field tokens, then a head MLP and a Linear.

    Each layer runs its blocks (high-rank, low-rank, implicit; attention or NAF when enabled) on its input E and the
    field tokens X0, concatenates their tokens and adds the (gated) residual with a LayerNorm; the module docstring
    gives the math per ``form`` and ablation, docs/models.md#dlf the reasoning. Layer 1 reads F tokens, every later
    layer ``num_tokens`` (n_out). ``nn.Linear`` weights start Xavier-normal, the token matrices Kaiming-uniform.

    Args:
        num_fields (int): F, tokens per sample.
        embedding_dim (int): d, the size of one token (a multiple of ``num_heads`` when attention is used).
        form (str): ``authors`` (the released code) or ``paper`` (our reading of the paper).
        num_layers (int): L, stacked DLF layers.
        rank (int): r, columns of the rank-aware interactions W_CI / W_LI.
        num_tokens_high (int): n_F of the high-rank block.
        num_tokens_low (int): n_F of the low-rank block.
        num_tokens_implicit (int): n_D of the implicit block.
        num_tokens_attention (int): n_A of the authors' attention block.
        block_hidden (int): hidden width of each block's token projection MLP.
        head_hidden (Sequence[int] | None): head MLP widths before the final Linear; None = the form's default
            (authors [512], paper [] = one Linear on vec(E^(L+1))).
        dropout (float): dropout probability in the block and head MLPs (0 = none).
        batch_norm (bool): BatchNorm1d in the block and head MLPs.
        num_heads (int): attention heads.
        attention_layers (int): stacked NAF layers per DLF layer (paper form).
        gate (bool): False = the "w/o gate" ablation.
        rli (bool): False = the "w/o RLI" ablation (implicit blocks instead of the rank-aware ones).
        naf (bool | None): attention on or off; None = the form's default (paper on, authors off).
        gate_eps (float): ε of the paper form's gate (G + ε) ⊙ R(E).

    Example::

        dlf = DLF(num_fields=4, embedding_dim=8, num_layers=2, rank=3, num_tokens_high=4, num_tokens_low=4,
                  num_tokens_implicit=4, block_hidden=16, head_hidden=[16])
        tokens = torch.randn(2, 4, 8)  # [B, F, d]
        logits = dlf(tokens)  # [2, 1]
        hidden = dlf.encode(tokens)  # [2, dlf.out_features] = [2, 16]
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        form: Literal["paper", "authors"] = "authors",
        num_layers: int = 3,
        rank: int = 24,
        num_tokens_high: int = 32,
        num_tokens_low: int = 32,
        num_tokens_implicit: int = 32,
        num_tokens_attention: int = 32,
        block_hidden: int = 512,
        head_hidden: Sequence[int] | None = None,
        dropout: float = 0.0,
        batch_norm: bool = True,
        num_heads: int = 2,
        attention_layers: int = 2,
        gate: bool = True,
        rli: bool = True,
        naf: bool | None = None,
        gate_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        # One value for the layer builders and the token bookkeeping, which also resolves the form's defaults.
        cfg = DLFConfig(
            form=form, num_layers=num_layers, rank=rank, num_tokens_high=num_tokens_high,
            num_tokens_low=num_tokens_low, num_tokens_implicit=num_tokens_implicit,
            num_tokens_attention=num_tokens_attention, block_hidden=block_hidden,
            head_hidden=None if head_hidden is None else list(head_hidden), dropout=dropout, batch_norm=batch_norm,
            num_heads=num_heads, attention_layers=attention_layers, gate=gate, rli=rli, naf=naf, gate_eps=gate_eps,
        )
        cfg.validate()
        if cfg.use_naf and embedding_dim % num_heads != 0:
            raise ValueError(f"dlf: num_heads {num_heads} must divide embedding_dim {embedding_dim}")
        self.layers = nn.ModuleList()
        n = num_fields
        for _ in range(num_layers):
            self.layers.append(build_layer(n, num_fields, embedding_dim, cfg))
            n = layer_output_tokens(cfg)
        self.num_tokens = n
        self.head_mlp = MLP(n * embedding_dim, cfg.head_units, None, batch_norm, dropout)
        self.out_features = self.head_mlp.out_features
        self.head = nn.Linear(self.out_features, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Model-wide Linear init of the authors' code (FuxiCTR). The custom token matrices keep their
        # kaiming-uniform init and the gate its neutral 1 - ε.
        init_linear_(self)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> the head MLP's output [B, out_features] (vec(E^(L+1)) [B, num_tokens·d] when the
        head is a single Linear)."""
        e = tokens
        for layer in self.layers:
            e = layer(e, tokens)
        return self.head_mlp(e.flatten(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, F, d] -> logits [B, 1]."""
        return self.head(self.encode(tokens))
