"""TF4CTR (Twin Focus for CTR): SSEM -> simple / complex encoders -> DFM, trained with BCE + Twin Focus loss.

docs/models.md#tf4ctr. The model is a wrapper: the simple encoder is an MLP, the complex encoder is an MLP or any
registered over-arch (``complex_encoder: {name: dcnv2, ...}``), which then sees field tokens [B, F, d].

Pipeline (B batch, F fields incl. dense ones, d embedding dim, D = F*d)::

    SSEM   sparse/dense -> h_es [B, D_s], h_hs [B, D]     (ser: D_s = F*d/2 from its own tables; else D_s = D)
    enc    h_es -> MLP_s -> he_s [B, W_s];  h_hs -> MLP_c or over-arch.encode -> he_c [B, W_c]
    heads  z_s = Linear(he_s), z_c = Linear(he_c)        (TF loss in every DFM; absent for BCE-only cf / moef)
    DFM    (z_s, z_c, he_s, he_c) -> fused logit z       (ModelOutput.logits)

The objective (``TF4CTR.loss``) is BCE(z) + L_TF(z_s, z_c) + embedding L2, all computed from ``output``.

Deviations from the authors' code, on purpose:

* VF: the code samples Gumbel noise at evaluation too. We add noise only in training mode; in eval mode the voting
  weights are the noise-free ``softmax([pi_s, pi_c] / tau)`` (deterministic; this is the natural "expected" choice
  the spec asks for, not the exact expectation of a Gumbel-softmax sample). Each pi head is sized by its own
  encoder's width (the code sizes both by the simple width, which breaks when the widths differ).
* Twin Focus loss from logits in fp32 (no -100 log clamp needed); see ``losses.py``.
* Embedding L2 is the trainer's (``optimizer.embedding_regularizer``): whole-table as the tables' weight decay, or the
  batch form over both table sets (``aux["emb_reg"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.data.meta import FeatureSpec
from dlf_torchrec.models.base import CTRModel, ModelOutput
from dlf_torchrec.models.embedding import FieldEmbedding, batch_l2_penalty
from dlf_torchrec.models.layers import MLP, init_linear_
from dlf_torchrec.models.losses import bce_with_logits, twin_focus_loss
from dlf_torchrec.models.registry import register_model

SSEM = Literal["ser", "gm", "moe", "share"]
DFM = Literal["wsf", "vf", "cf", "moef", "sum"]
# (easy tokens, hard tokens, the raw token sets of ssem.embeddings() for the batch-form embedding L2)
SSEMOutput = tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]


@dataclass
class TF4CTRConfig:
    # Sample Selection Embedding Module: ser = two table sets (hard d, easy d/2; needs even d), gm = scalar gate,
    # moe = 2 experts x 2 gates, share = one embedding for both encoders.
    ssem: SSEM = "ser"
    # Dynamic Fusion Module: wsf = w1*z_s + w2*z_c, vf = Gumbel-softmax voting, cf = Linear([he_s || he_c]),
    # moef = 2 scalar linear experts with a softmax gate on [he_s || he_c], sum = z_s + z_c.
    dfm: DFM = "wsf"
    simple_hidden_units: list[int] = field(default_factory=lambda: [400, 400])
    complex_hidden_units: list[int] = field(default_factory=lambda: [400, 400, 400])
    # None: the complex encoder is an MLP(complex_hidden_units). Otherwise a registered over-arch and its config,
    # e.g. {name: dcnv2, num_cross_layers: 3, hidden_units: [400, 400]}; it receives tokens [B, F, d].
    complex_encoder: dict[str, Any] | None = None
    batch_norm: bool = True
    dropout: float = 0.0
    activation: str = "relu"
    # twin_focus: BCE(z) + L_TF(z_s, z_c); bce: BCE(z) only (e.g. DualMLP with log loss = ssem share, dfm sum).
    loss: Literal["twin_focus", "bce"] = "twin_focus"
    alpha: float = 0.25
    c: float = 0.8
    gamma: float = 2.0
    vf_temperature: float = 0.8
    def validate(self) -> None:
        for key in ("simple_hidden_units", "complex_hidden_units"):
            units = getattr(self, key)
            if not units or any(u < 1 for u in units):
                raise ValueError(f"{key}: expected a non-empty list of positive ints, got {units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.c < 2.0:
            raise ValueError(f"c: must be in [0, 2) (paper range [0, 1]), got {self.c}")
        if self.gamma < 0:
            raise ValueError(f"gamma: must be >= 0, got {self.gamma}")
        if self.vf_temperature <= 0:
            raise ValueError(f"vf_temperature: must be > 0, got {self.vf_temperature}")
        self.complex_encoder_config()

    def complex_encoder_config(self) -> tuple[str, Any] | None:
        """Parse ``complex_encoder`` into (over-arch name, its validated config), or None for the MLP encoder."""
        if self.complex_encoder is None:
            return None
        from dlf_torchrec.config import from_dict
        from dlf_torchrec.models.registry import model_config_class, over_arch_names

        raw = dict(self.complex_encoder)
        name = raw.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"complex_encoder.name: required, one of {', '.join(over_arch_names())}; got {name!r}")
        if name not in over_arch_names():
            raise ValueError(
                f"complex_encoder.name: '{name}' is not a registered over-arch (known: {', '.join(over_arch_names())})"
            )
        return name, from_dict(model_config_class(name), raw, "model.complex_encoder")

    def check_embedding_dim(self, embedding_dim: int) -> None:
        """The SER easy tables use d/2 and the easy encoder's input is F*d/2 (docs/models.md#pitfall-ser-dims).

        ``features.embedding_dim`` is not visible to ``validate``; the builder calls this (a config-level check can
        call it too). Raises ValueError naming the key.
        """
        if self.ssem == "ser" and embedding_dim % 2:
            raise ValueError(
                f"features.embedding_dim: model.ssem 'ser' needs an even embedding_dim (the easy tables "
                f"use d/2), got {embedding_dim}"
            )


# ------------------------------------------------------------------------------------------------------ SSEM


class SeparateEmbeddings(nn.Module):
    """SER: two independent table sets (two EBCs, distinct table prefixes, both sharded by TorchRec).

    Returns (easy tokens [B, F, d/2], hard tokens [B, F, d], [both raw token sets] for the regulariser).
    """

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float, device: torch.device | None) -> None:
        super().__init__()
        self.hard = FieldEmbedding(spec, dim, init_std, prefix="hard_", device=device)
        self.easy = FieldEmbedding(spec, dim // 2, init_std, prefix="easy_", device=device)

    def embeddings(self) -> list[FieldEmbedding]:
        return [self.hard, self.easy]

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> SSEMOutput:
        easy, hard = self.easy(sparse, dense), self.hard(sparse, dense)
        return easy, hard, [easy, hard]


class GateSelection(nn.Module):
    """GM: g = sigmoid(MLP_gate(h)) [B, 1]; h_es = g*h, h_hs = (1-g)*h. Args: h [B, D]. Returns two [B, D]."""

    def __init__(self, width: int, cfg: TF4CTRConfig) -> None:
        super().__init__()
        self.gate = MLP(width, [max(1, width // 4)], 1, cfg.batch_norm, cfg.dropout, cfg.activation)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.sigmoid(self.gate(h))
        return g * h, (1.0 - g) * h


class MoESelection(nn.Module):
    """MoE: 2 experts MLP(h) hidden [D/2, D] and 2 softmax gates MLP hidden [D/4] -> 2.

    Args: h [B, D]. Returns (h_es, h_hs), each [B, D] = sum_k g_tk * m_k.
    """

    def __init__(self, width: int, cfg: TF4CTRConfig) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            MLP(width, [max(1, width // 2), width], None, cfg.batch_norm, cfg.dropout, cfg.activation) for _ in range(2)
        )
        self.gates = nn.ModuleList(
            MLP(width, [max(1, width // 4)], 2, cfg.batch_norm, cfg.dropout, cfg.activation) for _ in range(2)
        )

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        experts = torch.stack([e(h) for e in self.experts], dim=1)  # [B, 2, D]
        easy, hard = (torch.einsum("bk,bkd->bd", torch.softmax(g(h), dim=-1), experts) for g in self.gates)
        return easy, hard


class SharedEmbeddingSelection(nn.Module):
    """GM / MoE / Share over one table set.

    Returns (easy tokens [B, F, d], hard tokens [B, F, d], [the raw looked-up tokens] for the regulariser). GM/MoE
    work on the flat [B, F*d] vector; their outputs are reshaped back to tokens for a token-based encoder.
    """

    def __init__(self, spec: FeatureSpec, dim: int, init_std: float, cfg: TF4CTRConfig, device: torch.device | None):
        super().__init__()
        self.embedding = FieldEmbedding(spec, dim, init_std, device=device)
        width = spec.num_fields * dim
        self.select: nn.Module | None = None
        if cfg.ssem == "gm":
            self.select = GateSelection(width, cfg)
        elif cfg.ssem == "moe":
            self.select = MoESelection(width, cfg)

    def embeddings(self) -> list[FieldEmbedding]:
        return [self.embedding]

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> SSEMOutput:
        tokens = self.embedding(sparse, dense)
        if self.select is None:
            return tokens, tokens, [tokens]
        easy, hard = self.select(tokens.flatten(1))
        return easy.view_as(tokens), hard.view_as(tokens), [tokens]


# ------------------------------------------------------------------------------------------------------- DFM


class Fusion(nn.Module):
    """DFM (docs/models.md#tf4ctr-dfm).

    Args: z_s, z_c [B, 1] (None for cf / moef without TF loss); he_s [B, W_s]; he_c [B, W_c].

    Returns the fused logit [B, 1].
    """

    def __init__(self, kind: str, simple_width: int, complex_width: int, temperature: float) -> None:
        super().__init__()
        self.kind = kind
        self.temperature = temperature
        if kind == "wsf":
            self.w = nn.Parameter(torch.full((2,), 0.5))
        elif kind == "vf":
            self.pi_s = nn.Linear(simple_width, 1)
            self.pi_c = nn.Linear(complex_width, 1)
        elif kind == "cf":
            self.head = nn.Linear(simple_width + complex_width, 1)
        elif kind == "moef":
            self.gate = nn.Linear(simple_width + complex_width, 2)
            self.experts = nn.Linear(simple_width + complex_width, 2)
        elif kind != "sum":
            raise ValueError(f"model.dfm: unknown '{kind}'")

    def vote_weights(self, he_s: torch.Tensor, he_c: torch.Tensor) -> torch.Tensor:
        """VF voting weights [B, 2]: Gumbel-softmax sample in training, noise-free softmax(pi / tau) in eval."""
        pi = torch.cat([self.pi_s(he_s), self.pi_c(he_c)], dim=1)
        if self.training:
            u = torch.rand_like(pi).clamp_(1e-10, 1.0 - 1e-7)
            pi = pi - torch.log(-torch.log(u))  # + Gumbel(0, 1) noise
        return torch.softmax(pi / self.temperature, dim=1)

    def forward(
        self, z_s: torch.Tensor | None, z_c: torch.Tensor | None, he_s: torch.Tensor, he_c: torch.Tensor
    ) -> torch.Tensor:
        if self.kind in ("cf", "moef"):
            u = torch.cat([he_s, he_c], dim=1)
            if self.kind == "cf":
                return self.head(u)
            return (torch.softmax(self.gate(u), dim=1) * self.experts(u)).sum(dim=1, keepdim=True)
        assert z_s is not None and z_c is not None
        if self.kind == "wsf":
            return self.w[0] * z_s + self.w[1] * z_c
        if self.kind == "vf":
            p = self.vote_weights(he_s, he_c)
            return p[:, :1] * z_s + p[:, 1:] * z_c
        return z_s + z_c


# ----------------------------------------------------------------------------------------------------- model


class TF4CTR(CTRModel):
    """forward(dense [B, num_dense], sparse KJT) -> ModelOutput(logits = fused z [B], aux = {z_s, z_c, emb_reg})."""

    def __init__(
        self, spec: FeatureSpec, dim: int, init_std: float, cfg: TF4CTRConfig, device: torch.device | None = None
    ) -> None:
        super().__init__()
        cfg.check_embedding_dim(dim)
        self.cfg = cfg
        num_fields = spec.num_fields
        self.num_dense = len(spec.dense)
        if cfg.ssem == "ser":
            self.ssem: nn.Module = SeparateEmbeddings(spec, dim, init_std, device)
            simple_in = num_fields * (dim // 2)
        else:
            self.ssem = SharedEmbeddingSelection(spec, dim, init_std, cfg, device)
            simple_in = num_fields * dim
        self.simple = MLP(simple_in, cfg.simple_hidden_units, None, cfg.batch_norm, cfg.dropout, cfg.activation)
        encoder = cfg.complex_encoder_config()
        if encoder is None:
            self.complex: nn.Module = MLP(
                num_fields * dim, cfg.complex_hidden_units, None, cfg.batch_norm, cfg.dropout, cfg.activation
            )
            self.complex_takes_tokens = False
        else:
            from dlf_torchrec.models.registry import build_over_arch

            self.complex = build_over_arch(encoder[0], num_fields, dim, encoder[1])
            # z_c's head below replaces the over-arch's own (registry.OverArch): no unused parameters under DDP.
            self.complex.head = nn.Identity()
            self.complex_takes_tokens = True
        simple_width, complex_width = self.simple.out_features, int(self.complex.out_features)
        # z_s / z_c feed the TF loss and the wsf / vf / sum fusions. With BCE-only training and cf / moef they would
        # be unused parameters (DDP refuses those), so they are not built and aux carries no z_s / z_c.
        self.has_heads = cfg.loss == "twin_focus" or cfg.dfm in ("wsf", "vf", "sum")
        self.simple_head = nn.Linear(simple_width, 1) if self.has_heads else None
        self.complex_head = nn.Linear(complex_width, 1) if self.has_heads else None
        self.fusion = Fusion(cfg.dfm, simple_width, complex_width, cfg.vf_temperature)
        init_linear_(self)  # FuxiCTR's model-wide init (docs/models.md#init)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> ModelOutput:
        easy, hard, rows = self.ssem(sparse, dense)
        he_s = self.simple(easy.flatten(1))
        he_c = self.complex.encode(hard) if self.complex_takes_tokens else self.complex(hard.flatten(1))
        aux: dict[str, torch.Tensor] = {}
        z_s = z_c = None
        if self.simple_head is not None and self.complex_head is not None:
            z_s, z_c = self.simple_head(he_s), self.complex_head(he_c)
            aux.update(z_s=z_s.squeeze(-1), z_c=z_c.squeeze(-1))
        logits = self.fusion(z_s, z_c, he_s, he_c).squeeze(-1)
        if self.training and self.batch_l2 > 0:
            aux["emb_reg"] = batch_l2_penalty(rows, self.ssem.embeddings(), self.batch_l2)
        return ModelOutput(logits=logits, aux=aux)

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """BCE(z) + L_TF(z_s, z_c) (when loss = twin_focus) + the embedding regulariser, all fp32."""
        total = bce_with_logits(output.logits, labels)
        if self.cfg.loss == "twin_focus":
            cfg = self.cfg
            total = total + twin_focus_loss(output.aux["z_s"], output.aux["z_c"], labels, cfg.alpha, cfg.c, cfg.gamma)
        if "emb_reg" in output.aux:
            total = total + output.aux["emb_reg"].sum()
        return total


@register_model("tf4ctr", TF4CTRConfig)
def build_tf4ctr(
    spec: FeatureSpec, embedding_dim: int, init_std: float, cfg: TF4CTRConfig, device: torch.device | None = None
) -> TF4CTR:
    return TF4CTR(spec, embedding_dim, init_std, cfg, device)
