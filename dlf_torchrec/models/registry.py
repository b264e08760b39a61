"""Model registry: ``model.name`` in a config picks a model and that model's typed config dataclass.

Two kinds of entry:

* an **over-arch** (``@register_over_arch``): a module ``cls(num_fields, embedding_dim, cfg)`` that maps field tokens
  [B, F, d] to logits [B, 1] and exposes ``encode(tokens) -> [B, out_features]`` (its last hidden representation)
  plus ``out_features``. The model is then the standard :class:`TokenModel` (sharded field embeddings -> over-arch),
  and the over-arch can be reused inside other models (e.g. as TF4CTR's complex encoder).
* a **model** (``@register_model``): a builder for models that assemble their own embeddings (e.g. TF4CTR's two
  embedding sets).

Adding a model = a module + a decorator + an import line in ``dlf_torchrec/models/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from dlf_torchrec.data.meta import FeatureSpec


class OverArch(Protocol):
    out_features: int

    def encode(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor: ...


# builder(spec, embedding_dim, init_std, model_cfg, device) -> CTRModel
ModelBuilder = Callable[[FeatureSpec, int, float, Any, "torch.device | None"], nn.Module]
# factory(num_fields, embedding_dim, model_cfg) -> OverArch module
OverArchFactory = Callable[[int, int, Any], nn.Module]


@dataclass(frozen=True)
class _Entry:
    config_class: type
    build_model: ModelBuilder
    over_arch: OverArchFactory | None


_REGISTRY: dict[str, _Entry] = {}


def _add(name: str, entry: _Entry) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' registered twice")
    _REGISTRY[name] = entry


def register_over_arch(name: str, config_class: type) -> Callable[[OverArchFactory], OverArchFactory]:
    """Register an over-arch class; the model is field embeddings -> this over-arch."""

    def wrap(factory: OverArchFactory) -> OverArchFactory:
        def build(spec: FeatureSpec, dim: int, init_std: float, cfg: Any, device: torch.device | None) -> nn.Module:
            from dlf_torchrec.models.base import TokenModel
            from dlf_torchrec.models.embedding import FieldEmbedding

            return TokenModel(FieldEmbedding(spec, dim, init_std, device=device), factory(spec.num_fields, dim, cfg))

        _add(name, _Entry(config_class, build, factory))
        return factory

    return wrap


def register_model(name: str, config_class: type) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder for a model that assembles its own embeddings."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        _add(name, _Entry(config_class, builder, None))
        return builder

    return wrap


def _entry(name: str) -> _Entry:
    import dlf_torchrec.models  # noqa: F401  (registers the built-in models)

    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}' (registered: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def model_names() -> list[str]:
    import dlf_torchrec.models  # noqa: F401

    return sorted(_REGISTRY)


def over_arch_names() -> list[str]:
    import dlf_torchrec.models  # noqa: F401

    return sorted(n for n, e in _REGISTRY.items() if e.over_arch is not None)


def model_config_class(name: str) -> type:
    return _entry(name).config_class


def build_model(
    name: str,
    spec: FeatureSpec,
    embedding_dim: int,
    init_std: float,
    model_cfg: Any,
    device: torch.device | None = None,
) -> nn.Module:
    """Build model ``name``. ``device=torch.device("meta")`` defers the tables to DistributedModelParallel."""
    return _entry(name).build_model(spec, embedding_dim, init_std, model_cfg, device)


def build_over_arch(name: str, num_fields: int, embedding_dim: int, model_cfg: Any) -> nn.Module:
    """Build only the over-arch of model ``name`` (for composition, e.g. TF4CTR's complex encoder)."""
    entry = _entry(name)
    if entry.over_arch is None:
        raise ValueError(f"model '{name}' is not an over-arch and cannot be used as an encoder")
    return entry.over_arch(num_fields, embedding_dim, model_cfg)
