"""Model registry: ``model.name`` in a config picks a builder and that model's typed config dataclass.

Adding a model = a module with a config dataclass + ``@register_model("name", ConfigClass)`` on its builder +
an import line in ``dlf_torchrec/models/__init__.py``. Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dlf_torchrec.data.meta import FeatureSpec

# builder(spec, embedding_dim, init_std, model_cfg, device) -> CTRModel
Builder = Callable[[FeatureSpec, int, float, Any, torch.device | None], nn.Module]


@dataclass(frozen=True)
class _Entry:
    config_class: type
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, config_class: type) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        _REGISTRY[name] = _Entry(config_class, builder)
        return builder

    return wrap


def _entry(name: str) -> _Entry:
    import dlf_torchrec.models  # noqa: F401  (registers the built-in models)

    if name not in _REGISTRY:
        raise ValueError(f"model.name: unknown model '{name}' (registered: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def model_names() -> list[str]:
    import dlf_torchrec.models  # noqa: F401

    return sorted(_REGISTRY)


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
    """Build the registered model ``name``. ``device="meta"`` defers table allocation to DistributedModelParallel."""
    return _entry(name).builder(spec, embedding_dim, init_std, model_cfg, device)
