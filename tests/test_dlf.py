"""DLF over-arch: shapes for every form x ablation, gradient flow, hand-computed blocks, registry integration."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.config import ConfigError, from_dict, load_config
from dlf_torchrec.data.meta import CategoricalField, FeatureSpec
from dlf_torchrec.models.attention import MultiHeadSelfAttention, NAFLayer, multi_head_attention
from dlf_torchrec.models.dlf import (
    DLF,
    DLFConfig,
    LowRankBlock,
    RankInteraction,
    ResidualNorm,
    TokenMix,
    TokenProjection,
    layer_output_tokens,
)
from dlf_torchrec.models.registry import build_model, fields_of

REPO = Path(__file__).resolve().parent.parent
COMBOS = list(itertools.product(["authors", "paper"], [True, False], [True, False], [True, False]))


def small_cfg(form: str = "authors", gate: bool = True, rli: bool = True, naf: bool | None = None, **kw) -> DLFConfig:
    base = dict(num_layers=2, rank=3, num_tokens_high=3, num_tokens_low=2, num_tokens_implicit=4,
                num_tokens_attention=2, block_hidden=16, num_heads=2, attention_layers=2)
    base.update(kw)
    cfg = DLFConfig(form=form, gate=gate, rli=rli, naf=naf, **base)  # type: ignore[arg-type]
    cfg.validate()
    return cfg


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("form,gate,rli,naf", COMBOS)
def test_shapes_every_form_and_ablation(form: str, gate: bool, rli: bool, naf: bool) -> None:
    for num_fields, dim, num_layers in [(1, 2, 1), (5, 4, 2), (9, 8, 3)]:
        cfg = small_cfg(form, gate, rli, naf, num_layers=num_layers)
        model = DLF(num_fields, dim, **fields_of(cfg))
        tokens = torch.randn(4, num_fields, dim)
        x0, e = tokens, tokens
        for layer in model.layers:
            e = layer(e, x0)
            assert e.shape == (4, layer_output_tokens(cfg), dim)
        assert model.num_tokens == layer_output_tokens(cfg)
        assert model.encode(tokens).shape == (4, model.out_features)
        assert model(tokens).shape == (4, 1)
        model.eval()
        assert model(tokens[:1]).shape == (1, 1)


def test_token_bookkeeping() -> None:
    assert layer_output_tokens(small_cfg("authors")) == 3 + 2 + 4
    assert layer_output_tokens(small_cfg("authors", naf=True)) == 3 + 2 + 4 + 2
    assert layer_output_tokens(small_cfg("paper", naf=False)) == 3 + 2 + 4
    assert layer_output_tokens(small_cfg("paper")) == 2 * (3 + 2 + 4)  # block outputs + their NAF-fused copies


def test_form_defaults() -> None:
    assert not DLFConfig(form="authors").use_naf and DLFConfig(form="authors").head_units == [512]
    assert DLFConfig(form="paper").use_naf and DLFConfig(form="paper").head_units == []
    model = DLF(4, 8, **fields_of(small_cfg("paper")))
    assert model.out_features == model.num_tokens * 8  # paper head: one Linear on vec(E) (eq 16)
    assert isinstance(model.head, nn.Linear) and len(model.head_mlp) == 0


# ------------------------------------------------------------------------------------------------ gradients


def _pre_batchnorm_biases(model: nn.Module) -> set[int]:
    """Biases of Linear layers directly followed by BatchNorm: BN removes their effect, so their grad is ~0."""
    ids = set()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for a, b in zip(module, list(module)[1:], strict=False):
                if isinstance(a, nn.Linear) and isinstance(b, nn.BatchNorm1d) and a.bias is not None:
                    ids.add(id(a.bias))
    return ids


@pytest.mark.parametrize("form,gate,rli,naf", COMBOS)
def test_gradients_reach_every_parameter(form: str, gate: bool, rli: bool, naf: bool) -> None:
    torch.manual_seed(0)
    model = DLF(5, 4, **fields_of(small_cfg(form, gate, rli, naf)))
    tokens = torch.randn(8, 5, 4, requires_grad=True)
    labels = torch.randint(0, 2, (8, 1)).float()
    nn.functional.binary_cross_entropy_with_logits(model(tokens), labels).backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    frozen = _pre_batchnorm_biases(model)
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        if id(param) in frozen:
            assert param.grad.abs().max() < 1e-5, name
        else:
            assert param.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------ hand-computed blocks


E = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # [1, n=2, d=2]; E Eᵀ = [[5, 11], [11, 25]]


def test_high_rank_interaction_by_hand() -> None:
    block = RankInteraction(2, 2)
    with torch.no_grad():
        block.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    # S_C = E Eᵀ W_CI = [[5, 11], [11, 25]] @ [[1, 2], [0, 1]]
    assert torch.equal(block(E, E), torch.tensor([[[5.0, 21.0], [11.0, 47.0]]]))


def test_low_rank_interaction_by_hand() -> None:
    x0 = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    interaction = RankInteraction(2, 1)
    with torch.no_grad():
        interaction.weight.copy_(torch.tensor([[1.0], [0.0]]))
    # Eᵀ W_LI = [1, 2]; S_L = X0 [1, 2]ᵀ = [2, 3]
    assert torch.equal(interaction(E, x0), torch.tensor([[[2.0], [3.0]]]))
    # Authors' layers >= 2: X̃0 = P_x0ᵀ X0 with P_x0 = [[1], [1]] (F=2 -> 1 token) = [1, 2]; S_L = [1 + 4] = [5].
    block = LowRankBlock(1, 1, TokenProjection(1, 1, 2, 4, batch_norm=False, dropout=0.0), TokenMix(2, 1))
    block.projection = nn.Identity()  # look at S_L itself
    with torch.no_grad():
        block.interaction.weight.fill_(1.0)
        block.x0_projection.weight.fill_(1.0)
    assert torch.equal(block(torch.tensor([[[1.0, 2.0]]]), x0), torch.tensor([[[5.0]]]))


def test_implicit_linear_compression_by_hand() -> None:
    mix = TokenMix(2, 1)
    with torch.no_grad():
        mix.weight.copy_(torch.tensor([[1.0], [2.0]]))
    # Z_D = W_Dᵀ E = 1 * [1, 2] + 2 * [3, 4]
    assert torch.equal(mix(E), torch.tensor([[[7.0, 10.0]]]))


def test_attention_unscaled_vs_scaled_by_hand() -> None:
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    v = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    for scaled, s in [(False, 1.0), (True, 1 / math.sqrt(2))]:
        a = math.exp(s) / (math.exp(s) + 1)  # softmax([s, 0])[0]
        expected = torch.tensor([[[a * 1 + (1 - a) * 3, a * 2 + (1 - a) * 4]]])
        torch.testing.assert_close(multi_head_attention(q, k, v, 1, scaled), expected)
    # Two heads of d_h = 1: head 0 sees scores [1, 0] on v[:, 0]; head 1 has q = 0, so uniform weights on v[:, 1].
    a = math.e / (math.e + 1)
    expected = torch.tensor([[[a * 1 + (1 - a) * 3, 3.0]]])
    torch.testing.assert_close(multi_head_attention(q, k, v, 2, scaled=False), expected)
    torch.testing.assert_close(multi_head_attention(q, k, v, 2, scaled=True), expected)  # √1 = 1


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Explicit loops over batch, head and query token."""
    batch, n_q, dim = q.shape
    dh = dim // heads
    out = torch.zeros(batch, n_q, dim)
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            for i in range(n_q):
                scores = torch.stack([q[b, i, cols] @ k[b, j, cols] for j in range(k.shape[1])]) * scale
                weights = scores.softmax(0)
                out[b, i, cols] = sum(weights[j] * v[b, j, cols] for j in range(k.shape[1]))
    return out


def test_authors_mhsa_matches_reference() -> None:
    torch.manual_seed(1)
    mhsa = MultiHeadSelfAttention(4, 2, scaled=False)
    x = torch.randn(2, 3, 4)
    q, k, v = (x @ lin.weight.T for lin in (mhsa.qkv.query, mhsa.qkv.key, mhsa.qkv.value))
    torch.testing.assert_close(mhsa(x), _reference_attention(q, k, v, 2, 1.0))


def test_naf_cross_and_self_attention_match_reference() -> None:
    torch.manual_seed(2)
    dim, heads = 4, 2
    layer = NAFLayer(3, dim, heads)
    blocks = [torch.randn(2, n, dim) for n in (2, 3, 1)]
    out = layer(blocks)
    scale = 1 / math.sqrt(dim // heads)
    qkv = [
        [z @ lin.weight.T for lin in (proj.query, proj.key, proj.value)]
        for proj, z in zip(layer.projections, blocks, strict=True)
    ]
    for b in range(3):
        q = qkv[b][0]
        k_other = torch.cat([qkv[j][1] for j in range(3) if j != b], dim=1)
        v_other = torch.cat([qkv[j][2] for j in range(3) if j != b], dim=1)
        cross = _reference_attention(q, k_other, v_other, heads, scale)
        own = _reference_attention(q, qkv[b][1], qkv[b][2], heads, scale)
        expected = torch.einsum("bnk,dk->bnd", torch.cat([cross, own], -1), layer.mix[b].weight) + layer.mix[b].bias
        assert out[b].shape == blocks[b].shape
        torch.testing.assert_close(out[b], expected)


def test_token_projection_shapes_and_activation() -> None:
    proj = TokenProjection(6, 3, 2, hidden=5, batch_norm=True, dropout=0.0, layer_norm=True, out_act="sigmoid")
    z = proj(torch.randn(4, 2, 3))
    assert z.shape == (4, 3, 2) and bool(((z > 0) & (z < 1)).all())


# ------------------------------------------------------------------------------------------------ residual / gate


def test_gate_neutral_setting_is_plain_residual() -> None:
    torch.manual_seed(3)
    z, e = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    gated = ResidualNorm(3, 5, 4, "gated", eps=1e-3)
    plain = ResidualNorm(3, 5, 4, "plain", eps=1e-3)
    plain.load_state_dict(gated.state_dict(), strict=False)
    assert torch.allclose(gated.gate + gated.eps, torch.ones(5, 4))
    torch.testing.assert_close(gated(z, e), plain(z, e))
    torch.testing.assert_close(plain(z, e), plain.norm(z + torch.einsum("bnd,nm->bmd", e, plain.projection.weight)))
    none = ResidualNorm(3, 5, 4, "none", eps=0.0)
    assert none.projection is None
    torch.testing.assert_close(none(z, e), nn.functional.layer_norm(z, (4,)))
    with torch.no_grad():
        gated.gate.fill_(0.5 - 1e-3)
    torch.testing.assert_close(gated(z, e), plain.norm(z + 0.5 * plain.projection(e)))


def test_gated_model_at_init_equals_plain_model() -> None:
    torch.manual_seed(4)
    gated = DLF(5, 4, **fields_of(small_cfg("paper", gate=True))).eval()
    plain = DLF(5, 4, **fields_of(small_cfg("paper", gate=False))).eval()
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and all(k.endswith("residual.gate") for k in unexpected)
    tokens = torch.randn(3, 5, 4)
    torch.testing.assert_close(gated(tokens), plain(tokens))


# ------------------------------------------------------------------------------------------------ config, registry


def test_config_validation() -> None:
    cfg = from_dict(DLFConfig, {"form": "paper", "num_layers": 8, "head_hidden": None, "naf": False}, "model")
    assert cfg.num_layers == 8 and not cfg.use_naf
    for bad in ({"num_heads": 0}, {"dropout": 1.0}, {"head_hidden": [0]}, {"form": "wukong"}):
        with pytest.raises(ConfigError):
            from_dict(DLFConfig, bad, "model")
    with pytest.raises(ValueError, match="num_heads"):
        DLF(4, 5, **fields_of(small_cfg("paper", num_heads=2)))
    DLF(4, 5, **fields_of(small_cfg("authors", naf=False, num_heads=2)))  # no attention -> no constraint on d


@pytest.mark.parametrize("form", ["authors", "paper"])
def test_build_model_runs_on_keyed_jagged_tensor(form: str) -> None:
    torch.manual_seed(5)
    spec = FeatureSpec(categorical=(CategoricalField("c1", 7), CategoricalField("c2", 11), CategoricalField("c3", 5)),
                       dense=("i1", "i2"))
    model = build_model("dlf", spec, 8, 1e-4, small_cfg(form))
    batch = 6
    ids = torch.cat([torch.randint(1, f.vocab_size, (batch,)) for f in spec.categorical])
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=spec.categorical_names, values=ids, lengths=torch.ones(batch * len(spec.categorical), dtype=torch.int32)
    )
    dense = torch.rand(batch, len(spec.dense))
    out = model(dense, sparse)
    assert out.logits.shape == (batch,)
    loss = model.loss(out, torch.randint(0, 2, (batch,)).float())
    loss.backward()
    assert model.over_arch.layers[0].residual.norm.weight.grad is not None


def test_authors_parameter_count_matches_models_md() -> None:
    # docs/models.md#dlf-parameter-count: F=39, d=64, r=24, h=512, L=3, n_F=n_D=32 -> 15,190,065 non-embedding
    # parameters.
    model = DLF(39, 64, form="authors", num_layers=3, rank=24, block_hidden=512,
                num_tokens_high=32, num_tokens_low=32, num_tokens_implicit=32)

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(model) == 15_190_065
    assert count(model.layers[0]) == 3_073_520  # ~3.07M
    assert count(model.layers[1]) == count(model.layers[2]) == 4_484_384  # ~4.48M each
    assert count(model.head_mlp) + count(model.head) == 3_147_777  # ~3.15M


@pytest.mark.parametrize("dataset", ["synthetic", "criteo", "avazu", "frappe"])
def test_shipped_configs_load(dataset: str) -> None:
    path = REPO / "configs" / dataset / "dlf.yaml"
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    cfg = load_config(path)
    assert cfg.model_name == "dlf" and isinstance(cfg.model, DLFConfig)
