"""Config validation: unknown keys and wrong types fail with the key named; overrides apply before validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dlf_torchrec.config import ConfigError, build_config, load_config

REPO = Path(__file__).resolve().parent.parent
# bases and includes too, and the configs the package ships (sweep spaces are not experiments: tested below)
CONFIGS = sorted([*(p for p in REPO.glob("configs/*/*.yaml") if p.parent.name != "sweeps"),
                  *REPO.glob("dlf_torchrec/configs/*/*.yaml")])
SWEEP_SPACES = sorted(REPO.glob("configs/sweeps/*.yaml"))


@pytest.mark.parametrize("path", SWEEP_SPACES, ids=lambda p: p.name)
def test_every_shipped_sweep_space_validates_against_its_config(path: Path) -> None:
    """A sweep space parses, and every key it sweeps exists in the experiment config named in its command line."""
    import re

    import yaml

    from dlf_torchrec.sweep.space import overrides, parse_space

    text = path.read_text()
    space = parse_space(yaml.safe_load(text), str(path))
    (config,) = re.findall(r"--config (\S+\.yaml)", text)
    for p in space.params:
        for value in (p.choices if p.kind == "choices" else [p.low, p.high]):
            load_config(REPO / config, overrides({p.key: int(value) if p.integer else value}))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model is not None
    assert cfg.to_dict()["model"]["name"] == cfg.model_name


@pytest.mark.parametrize(
    ("raw", "overrides", "message"),
    [
        ({"training": {"batch_sise": 3}}, [], "unknown key 'training.batch_sise' (did you mean 'batch_size'?)"),
        ({"training": {"batch_size": "big"}}, [], "training.batch_size: expected int, got str 'big'"),
        ({"training": {"batch_size": True}}, [], "training.batch_size: expected int"),
        ({"optimizer": {"dense": {"lr": "fast"}}}, [], "optimizer.dense.lr: expected float"),
        ({"sharding": {"type": "diagonal"}}, [], "sharding.type: expected one of"),
        ({"model": {"name": "dcnv2", "hiden_units": [1]}}, [], "unknown key 'model.hiden_units'"),
        ({"model": {"name": "dcnv2", "hidden_units": [1, "x"]}}, [], "model.hidden_units[1]: expected int"),
        ({"model": {"name": "nope"}}, [], "unknown model 'nope'"),
        ({"dataset": {"format": "criteo"}}, [], "dataset.train: required"),
        ({"dataset": {"split": [0.5, 0.1, 0.1]}}, [], "dataset.split"),
        ({"training": {"monitor": {"acc": 1.0}}}, [], "training.monitor"),
        ({"bogus": 1}, [], "unknown key 'bogus'"),
        ({}, ["training.epochs=zero"], "training.epochs: expected int, got str 'zero'"),
        ({}, ["training.epochs"], "expected key.sub=value"),
        ({}, ["features.embedding_dim=0"], "features.embedding_dim: must be >= 1"),
    ],
)
def test_errors_name_the_key(raw: dict, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(raw, "exp.yaml", overrides)
    assert message in str(err.value)
    assert str(err.value).startswith("exp.yaml: ")


def test_overrides_are_parsed_as_yaml_and_ints_widen_to_float() -> None:
    cfg = build_config({}, overrides=["training.epochs=3", "model.hidden_units=[64, 32]", "optimizer.dense.lr=1",
                                      "sharding.type=row_wise"])
    assert cfg.training.epochs == 3
    assert cfg.model.hidden_units == [64, 32]
    assert cfg.optimizer.dense.lr == 1.0 and isinstance(cfg.optimizer.dense.lr, float)
    assert cfg.sharding.type == "row_wise"


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_dataset_only_loading_skips_the_model_registry_but_still_validates_the_dataset() -> None:
    import subprocess
    import sys

    # A fresh interpreter: the preprocessing CLI's config load must not pay for importing torch/torchrec.
    code = ("import sys; from dlf_torchrec.config import load_config; "
            "cfg = load_config('configs/criteo/dcnv2.yaml', validate_model=False); "
            "print(cfg.dataset.name, cfg.model, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out[1:] == ["None", "False"] and out[0].startswith("criteo")
    with pytest.raises(ConfigError, match="dataset.min_cont"):
        build_config({"dataset": {"min_cont": 3}, "model": {"name": "no_such_model"}}, validate_model=False)


def test_includes_merge_in_order_and_errors_name_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    data = tmp_path / "shared" / "data.yaml"
    data.write_text("training: {epochs: 7, batch_size: 64}\nfeatures: {embedding_dim: 8}\n")
    (tmp_path / "base.yaml").write_text(
        "defaults: [shared/data.yaml]\ntraining: {batch_size: 128}\nmodel: {name: dcnv2, num_cross_layers: 5}\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text("defaults: [base.yaml]\ntraining: {seed: 3}\nmodel: {name: dcnv2, dropout: 0.1}\n")
    cfg = load_config(exp, ["training.epochs=2"])
    assert (cfg.training.epochs, cfg.training.batch_size, cfg.training.seed) == (2, 128, 3)
    assert cfg.features.embedding_dim == 8
    assert (cfg.model.num_cross_layers, cfg.model.dropout) == (5, 0.1)
    # Another model replaces the included model section whole (dcnv2's keys are not dnn's).
    exp.write_text("defaults: [base.yaml]\nmodel: {name: dnn}\n")
    assert load_config(exp).model_name == "dnn"
    # A bad value set in an included file is reported with that file's path.
    (tmp_path / "shared" / "data.yaml").write_text("features: {embedding_dim: big}\n")
    with pytest.raises(ConfigError, match=r"shared/data.yaml \(included by .*exp.yaml\): features.embedding_dim"):
        load_config(exp)
    (tmp_path / "shared" / "data.yaml").write_text("defaults: [../exp.yaml]\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(exp)
    exp.write_text("defaults: [missing.yaml]\n")
    with pytest.raises(ConfigError, match="file not found: .*missing.yaml"):
        load_config(exp)


def test_input_paths_are_relative_to_the_yaml_that_sets_them(tmp_path, monkeypatch) -> None:
    """YAML input paths follow their file (incl. an included base), command-line ones the cwd; so the shipped
    configs find ../shared/data from any working directory (they used to rely on the source checkout's root)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "base.yaml").write_text("dataset: {format: criteo, train: data/x.txt, schema: s.yaml}\n")
    (tmp_path / "a" / "b" / "exp.yaml").write_text(
        f"defaults: [../base.yaml]\ndataset: {{valid: v.txt, test: {tmp_path / 'abs.txt'}}}\n")
    cfg = load_config(tmp_path / "a" / "b" / "exp.yaml")
    assert cfg.dataset.train == str(tmp_path / "a" / "data" / "x.txt")
    assert cfg.dataset.schema == str(tmp_path / "a" / "s.yaml")
    assert cfg.dataset.valid == str(tmp_path / "a" / "b" / "v.txt") and cfg.dataset.test == str(tmp_path / "abs.txt")
    assert load_config(tmp_path / "a" / "b" / "exp.yaml", ["dataset.train=rel/t.txt"]).dataset.train == "rel/t.txt"
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    for name in ("criteo", "avazu", "frappe"):
        ds = load_config(repo / "configs" / name / "dcnv2.yaml").dataset
        assert all(os.path.isfile(p) for p in (ds.train, ds.valid, ds.test) if p), ds
