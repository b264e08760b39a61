"""Every registered over-arch keeps the registry.OverArch contract, takes its config's fields as constructor
arguments (same names, same defaults), and its docstring's ``Example::`` runs."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import textwrap

import pytest
import torch
from torch import nn

from dlf_torchrec.models.registry import build_over_arch, model_config_class, over_arch_names

NAMES = over_arch_names()


def over_arch_class(name: str) -> type[nn.Module]:
    return type(build_over_arch(name, 2, 4, model_config_class(name)()))


@pytest.mark.parametrize("name", NAMES)
def test_constructor_arguments_are_the_config_fields(name: str) -> None:
    params = inspect.signature(over_arch_class(name)).parameters
    assert list(params)[:2] == ["num_fields", "embedding_dim"]
    fields = {f.name: f for f in dataclasses.fields(model_config_class(name))}
    assert set(params) - {"num_fields", "embedding_dim"} == set(fields)
    defaults = model_config_class(name)()
    for key in fields:
        default = params[key].default
        expected = getattr(defaults, key)
        assert (list(default) if isinstance(default, tuple) else default) == expected, key


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str) -> None:
    torch.manual_seed(0)
    over_arch = build_over_arch(name, 3, 4, model_config_class(name)()).eval()
    tokens = torch.randn(5, 3, 4)
    hidden = over_arch.encode(tokens)
    assert hidden.shape == (5, over_arch.out_features)
    assert isinstance(over_arch.head, nn.Linear) and over_arch.head.in_features == over_arch.out_features
    torch.testing.assert_close(over_arch(tokens), over_arch.head(hidden))
    assert over_arch(tokens).shape == (5, 1)


@pytest.mark.parametrize("name", NAMES)
def test_docstring_example_runs(name: str) -> None:
    cls = over_arch_class(name)
    doc = cls.__doc__ or ""
    assert "Args:" in doc and "Example::" in doc
    example = textwrap.dedent(doc.split("Example::", 1)[1])
    namespace = {"torch": torch, **vars(sys.modules[cls.__module__])}
    exec(compile(example, f"{cls.__name__} docstring", "exec"), namespace)  # noqa: S102
