"""Model registry: ``model.name`` in a config picks a model and that model's typed config dataclass.

Two kinds of entry:

* an **over-arch** (``@register_over_arch``): a module with explicit typed constructor arguments
  ``cls(num_fields, embedding_dim, **arguments)`` that satisfies :class:`OverArch`. The registry is where a config
  becomes those arguments: each field of the config dataclass is passed as the keyword argument of the same name.
  The model is then the standard :class:`TokenModel` (sharded field embeddings -> over-arch), and the over-arch can
  be reused inside other models (e.g. as TF4CTR's complex encoder).
* a **model** (``@register_model``): a builder for models that assemble their own embeddings (e.g. TF4CTR's two
  embedding sets).

Adding a model = a module + a decorator + an import line in ``dlf_torchrec/models/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import torch
from torch import nn

from dlf_torchrec.data.meta import FeatureSpec


class OverArch(Protocol):
    """What every registered over-arch provides, and all that other models may rely on.

    * ``forward(tokens)``: field tokens [B, F, d] -> logits [B, 1], equal to ``head(encode(tokens))``;
    * ``encode(tokens)``: tokens [B, F, d] -> the last hidden representation [B, out_features];
    * ``out_features``: the width of ``encode``'s output;
    * ``head``: the final ``nn.Linear(out_features, 1)``. A model that reuses the over-arch as an encoder with a
      head of its own (TF4CTR's complex encoder) calls ``encode`` and sets ``head = nn.Identity()``, so that
      DistributedDataParallel sees no unused parameters.
    """

    out_features: int
    head: nn.Module

    def encode(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def forward(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor: ...


# builder(spec, embedding_dim, init_std, model_cfg, device) -> CTRModel
ModelBuilder = Callable[[FeatureSpec, int, float, Any, "torch.device | None"], nn.Module]
# factory(num_fields, embedding_dim, model_cfg) -> OverArch module
OverArchFactory = Callable[[int, int, Any], nn.Module]
OverArchClass = TypeVar("OverArchClass", bound=type[nn.Module])


def fields_of(cfg: Any) -> dict[str, Any]:
    """A config dataclass as constructor keyword arguments: ``{field name: value}`` (shallow, values as they are)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


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


def register_over_arch(name: str, config_class: type) -> Callable[[OverArchClass], OverArchClass]:
    """Register an over-arch class (see :class:`OverArch`); the model is field embeddings -> this over-arch.

    ``config_class``'s fields must be keyword arguments of the class's constructor (same names).
    """

    def wrap(cls: OverArchClass) -> OverArchClass:
        def factory(num_fields: int, embedding_dim: int, cfg: Any) -> nn.Module:
            return cls(num_fields=num_fields, embedding_dim=embedding_dim, **fields_of(cfg))

        def build(spec: FeatureSpec, dim: int, init_std: float, cfg: Any, device: torch.device | None) -> nn.Module:
            from dlf_torchrec.models.base import TokenModel
            from dlf_torchrec.models.embedding import FieldEmbedding

            return TokenModel(FieldEmbedding(spec, dim, init_std, device=device), factory(spec.num_fields, dim, cfg))

        _add(name, _Entry(config_class, build, factory))
        return cls

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


def build_over_arch(name: str, num_fields: int, embedding_dim: int, model_cfg: Any) -> OverArch:
    """Build only the over-arch of model ``name`` from its config (for composition, e.g. TF4CTR's complex encoder)."""
    entry = _entry(name)
    if entry.over_arch is None:
        raise ValueError(f"model '{name}' is not an over-arch and cannot be used as an encoder")
    return cast(OverArch, entry.over_arch(num_fields, embedding_dim, model_cfg))
