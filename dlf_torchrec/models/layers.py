"""Layers shared by the over-arches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@dataclass
class MLPConfig:
    """The MLP keys shared by model configs (``hidden_units``, ``batch_norm``, ``dropout``, ``activation``)."""

    hidden_units: list[int] = field(default_factory=lambda: [400, 400, 400])
    batch_norm: bool = True
    dropout: float = 0.0
    activation: str = "relu"

    def validate(self) -> None:
        check_mlp_config(self.hidden_units, self.dropout, self.activation)


def check_mlp_config(hidden_units: Sequence[int], dropout: float, act: str, key: str = "hidden_units") -> None:
    """Config-time checks for an MLP block; raises ValueError naming the key."""
    if any(units < 1 for units in hidden_units):
        raise ValueError(f"{key}: every layer width must be >= 1, got {list(hidden_units)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
    if act not in _ACTIVATIONS:
        raise ValueError(f"activation: unknown '{act}' (known: {', '.join(_ACTIVATIONS)})")


def activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}' (known: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]()


def init_linear_(module: nn.Module) -> None:
    """FuxiCTR's model-wide initialisation: Xavier-normal weights and zero biases for every ``nn.Linear`` inside
    ``module`` (exact type, as FuxiCTR's ``type(m) in [nn.Linear, ...]``); other parameters keep their own init."""
    for m in module.modules():
        if type(m) is nn.Linear:
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MLP(nn.Sequential):
    """FuxiCTR MLP_Block semantics: per hidden size Linear -> (BatchNorm1d) -> activation -> (Dropout);
    then a plain Linear(->output_dim) when ``output_dim`` is given.

    Args: x [B, in_features]. Returns [B, output_dim or hidden_units[-1] or in_features].
    """

    def __init__(
        self,
        in_features: int,
        hidden_units: Sequence[int],
        output_dim: int | None = None,
        batch_norm: bool = False,
        dropout: float = 0.0,
        act: str = "relu",
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for units in hidden_units:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        super().__init__(*layers)
        self.out_features = width


class CrossNetV2(nn.Module):
    """DCNv2 cross network: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, full-rank W_l (or low-rank U_l V_l^T).

    Args: x0 [B, D]. Returns [B, D].
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int | None = None) -> None:
        super().__init__()
        if low_rank is None:
            self.layers = nn.ModuleList(nn.Linear(in_features, in_features) for _ in range(num_layers))
        else:
            self.layers = nn.ModuleList(
                nn.Sequential(nn.Linear(in_features, low_rank, bias=False), nn.Linear(low_rank, in_features))
                for _ in range(num_layers)
            )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
