"""TF4CTR: every SSEM x DFM builds and trains a step; VF noise only in training; over-arch encoders; validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec.config import ConfigError, build_config
from dlf_torchrec.data.meta import CategoricalField, FeatureSpec
from dlf_torchrec.models.registry import build_model, over_arch_names
from dlf_torchrec.models.tf4ctr import TF4CTR

SPEC = FeatureSpec(
    categorical=(CategoricalField("user", 11), CategoricalField("item", 13), CategoricalField("ctx", 5)),
    dense=("price", "age"),
)
BATCH = 8
DIM = 4
SMALL = {"simple_hidden_units": [8], "complex_hidden_units": [8, 8]}


def _model_cfg(**model: Any) -> Any:
    return build_config({"model": {"name": "tf4ctr", **SMALL, **model}}).model


def _build(dim: int = DIM, batch_l2: float = 0.0, **model: Any) -> TF4CTR:
    built = build_model("tf4ctr", SPEC, dim, 1e-4, _model_cfg(**model))
    built.batch_l2 = batch_l2  # optimizer.embedding_regularizer with embedding_regularizer_mode: batch
    return built


def _batch(seed: int = 0) -> tuple[torch.Tensor, KeyedJaggedTensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    values = torch.cat([torch.randint(1, f.vocab_size, (BATCH,), generator=g) for f in SPEC.categorical])
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=SPEC.categorical_names, values=values, lengths=torch.ones(len(SPEC.categorical) * BATCH, dtype=torch.int32)
    )
    dense = torch.randn(BATCH, len(SPEC.dense), generator=g)
    labels = torch.randint(0, 2, (BATCH,), generator=g).float()
    return dense, sparse, labels


@pytest.mark.parametrize("dfm", ["wsf", "vf", "cf", "moef", "sum"])
@pytest.mark.parametrize("ssem", ["ser", "gm", "moe", "share"])
def test_every_ssem_dfm_trains_a_step(ssem: str, dfm: str) -> None:
    model = _build(ssem=ssem, dfm=dfm, batch_l2=1e-2)
    dense, sparse, labels = _batch()
    out = model(dense, sparse)
    assert out.logits.shape == (BATCH,)
    assert set(out.aux) == {"z_s", "z_c", "emb_reg"} and all(v.shape == (BATCH,) for v in out.aux.values())
    loss = model.loss(out, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    dense_params = [(n, p) for n, p in model.named_parameters() if "ebc" not in n]
    missing = [n for n, p in dense_params if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    for ebc in [m for m in model.modules() if type(m).__name__ == "EmbeddingBagCollection"]:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ebc.parameters())


def test_ser_has_two_table_sets_with_half_dim_easy_tables() -> None:
    model = _build(ssem="ser")
    ebcs = {
        cfg.name: cfg.embedding_dim
        for m in model.modules()
        if type(m).__name__ == "EmbeddingBagCollection"
        for cfg in m.embedding_bag_configs()
    }
    assert ebcs == {**{f"hard_t_{n}": DIM for n in SPEC.categorical_names},
                    **{f"easy_t_{n}": DIM // 2 for n in SPEC.categorical_names}}  # fmt: skip


def test_ser_tables_can_be_built_on_meta_with_dense_modules_real() -> None:
    model = build_model("tf4ctr", SPEC, DIM, 1e-4, _model_cfg(ssem="ser"), torch.device("meta"))
    for name, p in model.named_parameters():
        assert p.is_meta == ("ebc" in name), name


def test_vf_deterministic_in_eval_stochastic_in_train() -> None:
    torch.manual_seed(0)
    model = _build(ssem="share", dfm="vf")
    dense, sparse, _ = _batch()
    model.train()
    a, b = model(dense, sparse).logits, model(dense, sparse).logits
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        a, b = model(dense, sparse).logits, model(dense, sparse).logits
    assert torch.equal(a, b)


def test_wsf_starts_at_half_weights_and_sum_is_z_s_plus_z_c() -> None:
    dense, sparse, _ = _batch()
    for dfm, scale in (("wsf", 0.5), ("sum", 1.0)):
        model = _build(ssem="share", dfm=dfm).eval()
        with torch.no_grad():
            out = model(dense, sparse)
        torch.testing.assert_close(out.logits, scale * (out.aux["z_s"] + out.aux["z_c"]))


def test_loss_is_bce_plus_twin_focus_plus_regulariser() -> None:
    from dlf_torchrec.models.losses import bce_with_logits, twin_focus_loss

    model = _build(batch_l2=0.1, alpha=0.35, c=0.9, gamma=1.0)
    dense, sparse, labels = _batch()
    out = model(dense, sparse)
    want = (
        bce_with_logits(out.logits, labels)
        + twin_focus_loss(out.aux["z_s"], out.aux["z_c"], labels, 0.35, 0.9, 1.0)
        + out.aux["emb_reg"].sum()
    )
    torch.testing.assert_close(model.loss(out, labels), want)
    bce_model = _build(loss="bce", ssem="share", dfm="sum")  # DualMLP with log loss
    out = bce_model(dense, sparse)
    torch.testing.assert_close(bce_model.loss(out, labels), bce_with_logits(out.logits, labels))


def test_batch_regulariser_value() -> None:
    lam = 0.1
    model = _build(ssem="ser", batch_l2=lam)
    dense, sparse, _ = _batch()
    reg = model(dense, sparse).aux["emb_reg"].sum()
    want = torch.zeros(())
    for emb in (model.ssem.hard, model.ssem.easy):
        tokens = emb(sparse, dense)[:, len(SPEC.dense) :]
        want = want + tokens.pow(2).sum() + emb.dense_tokens.weight.pow(2).sum()
    torch.testing.assert_close(reg, 0.5 * lam * want)


@pytest.mark.parametrize("ssem", ["ser", "moe"])
def test_dcnv2_complex_encoder(ssem: str) -> None:
    model = _build(ssem=ssem, dfm="cf", complex_encoder={"name": "dcnv2", "num_cross_layers": 2, "hidden_units": [8]})
    assert type(model.complex).__name__ == "DCNv2"
    dense, sparse, labels = _batch()
    out = model(dense, sparse)
    model.loss(out, labels).backward()
    unused = [n for n, p in model.named_parameters() if "ebc" not in n and p.grad is None]
    assert not unused


@pytest.mark.parametrize("name", over_arch_names())
def test_every_registered_over_arch_as_complex_encoder(name: str) -> None:
    # Covers dnn, dcnv2 and (once registered) dlf with their default configs; the over-arch's own head is dropped.
    model = _build(ssem="ser", dfm="vf", complex_encoder={"name": name})
    dense, sparse, labels = _batch()
    out = model(dense, sparse)
    model.loss(out, labels).backward()
    assert torch.isfinite(out.logits).all()
    assert not [n for n, p in model.named_parameters() if "ebc" not in n and p.grad is None]


def _error(**model: Any) -> str:
    with pytest.raises(ConfigError) as e:
        _model_cfg(**model)
    return str(e.value)


def test_config_errors_name_the_key() -> None:
    assert "model.ssem" in _error(ssem="nope")
    assert "model.dfm" in _error(dfm="nope")
    assert "model.complex_encoder.bogus" in _error(complex_encoder={"name": "dcnv2", "bogus": 1})
    assert "complex_encoder.name" in _error(complex_encoder={"name": "nope"})
    assert "complex_encoder.name" in _error(complex_encoder={"num_cross_layers": 2})
    assert "alpha" in _error(alpha=1.5)


def test_odd_embedding_dim_with_ser_names_the_key() -> None:
    with pytest.raises(ValueError, match="features.embedding_dim"):
        _build(dim=5, ssem="ser")
    _build(dim=5, ssem="share")  # fine without SER


@pytest.mark.parametrize("dfm", ["cf", "moef", "wsf"])
def test_bce_only_leaves_no_unused_parameters(dfm: str) -> None:
    # DDP (find_unused_parameters=False) refuses parameters that get no gradient.
    model = _build(ssem="share", dfm=dfm, loss="bce")
    dense, sparse, labels = _batch()
    out = model(dense, sparse)
    model.loss(out, labels).backward()
    assert not [n for n, p in model.named_parameters() if "ebc" not in n and p.grad is None]
    assert ("z_s" in out.aux) == (dfm == "wsf")
