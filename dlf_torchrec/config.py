"""Typed experiment configuration: one YAML per experiment, validated before any work starts.

An experiment YAML has six sections::

    dataset:   raw sources and preprocessing (format, files, splits, vocab rules, bad-row policy)
    features:  embedding dimension and initialisation
    model:     ``name`` picks a registered over-arch; the other keys are that model's own typed config
    optimizer: dense (torch) and sparse (fused TorchRec) optimisers
    sharding:  how the embedding tables are sharded across ranks
    training:  batch size, epochs, evaluation, early stopping, checkpoints, logging

Unknown keys and wrong types raise :class:`ConfigError` naming the key (``training.batch_size: expected int,
got str 'big'``). ``key.sub=value`` overrides (parsed as YAML) are applied before validation."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from dlf_torchrec.config_yaml import origin_of, read_config_tree
from dlf_torchrec.errors import ConfigError

T = TypeVar("T")

# The configs the package itself needs ship inside it (no source checkout needed): docs/architecture.md#packaged-configs
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = PACKAGED_CONFIGS / "synthetic" / "dcnv2.yaml"


@dataclass
class DatasetConfig:
    """Raw data and how to preprocess it (see ``dlf_torchrec.data.preprocess``)."""

    name: str = "synthetic"
    # criteo: Kaggle TSV (label, I1..I13, C1..C26); avazu: Kaggle CSV; libfm: `label id:val ...` (Frappe, MovieLens);
    # csv: any delimited file described by `schema`; recbole: RecBole atomic files (.inter, typed header);
    # synthetic: generated Criteo-format TSV with a planted signal.
    format: Literal["criteo", "avazu", "libfm", "csv", "recbole", "synthetic"] = "synthetic"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    # Random split ratios (train, valid, test) applied to `train` when `valid`/`test` are not given.
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 2018
    # csv: a YAML schema file or inline. Input paths are relative to the YAML that sets them (command line: to cwd).
    schema: dict[str, Any] | str | None = None
    # User / item feature files joined to each row by key (docs/data.md#side-tables): [{file, key, ...}].
    side_tables: list[dict[str, Any]] = field(default_factory=list)
    # Tokens seen fewer than min_count times in train map to the field's OOV id (FuxiCTR rule, docs/data.md#vocabulary).
    min_count: int = 1
    # Numeric columns: bucketize (floor(ln(x)^2) ids, BARS), dense (floats) or auto (Criteo: bucketize, csv: dense).
    numeric: Literal["auto", "bucketize", "dense"] = "auto"
    # Malformed rows: "skip" counts and reports them, "fail" stops with file:line.
    bad_rows: Literal["skip", "fail"] = "skip"
    # bad_rows skip: fail (naming the file, top reasons) when more of a file's rows are rejected; 0 usable rows: fail.
    max_bad_fraction: float = 0.01
    chunk_rows: int = 100_000
    # Where preprocessed shards + meta.json go. Relative paths are relative to the current directory.
    output_dir: str = "data/processed/synthetic"
    synthetic_rows: int = 200_000  # format synthetic: rows to generate and the generator's seed
    synthetic_seed: int = 7
    progress: bool = True

    def __post_init__(self) -> None:
        from dlf_torchrec.data.formats import default_numeric
        self.numeric = default_numeric(self.format) if self.numeric == "auto" else self.numeric


@dataclass
class FeaturesConfig:
    embedding_dim: int = 16
    # FuxiCTR initialises tables N(0, 1e-4^2) (docs/models.md#pitfall-embedding-init); TorchRec's default: uniform.
    init_std: float = 1e-4


@dataclass
class DenseOptimizerConfig:
    name: Literal["adam", "adamw", "adagrad", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0


# Table optimisers that also exist as torch optimisers (what trains a table on the dense kernel).
DENSE_KERNEL_OPTIMIZERS = ("adam", "adagrad", "sgd")


@dataclass
class SparseOptimizerConfig:
    # Fused FBGEMM optimisers. On CPU only rowwise_adagrad, adagrad and sgd exist; adam needs CUDA kernels.
    name: Literal["rowwise_adagrad", "adagrad", "sgd", "adam"] = "rowwise_adagrad"
    lr: float = 0.05
    eps: float = 1e-8
    weight_decay: float = 0.0
    # Which kernel trains each table (docs/training.md, "Embedding optimisers"):
    #   fused: FBGEMM table-batched kernel, sharded by the planner, updated inside backward (only the rows looked
    #          up in the batch change); scales to tables of any size.
    #   dense: the table is replicated (data_parallel) and trained by the torch optimiser of the same name, every
    #          row every step (FuxiCTR's semantics: Adam moments of unseen rows decay too). For small tables.
    #   auto:  dense for tables with at most dense_max_rows rows, fused above.
    kernel: Literal["fused", "dense", "auto"] = "fused"
    dense_max_rows: int = 100_000


@dataclass
class OptimizerConfig:
    dense: DenseOptimizerConfig = field(default_factory=DenseOptimizerConfig)
    sparse: SparseOptimizerConfig = field(default_factory=SparseOptimizerConfig)
    # Clip the global grad norm of the dense parameters (FuxiCTR uses 10); 0 disables.
    grad_clip_norm: float = 10.0
    # Embedding L2 for every model (FuxiCTR's embedding_regularizer): penalty lambda/2 * ||E||^2.
    embedding_regularizer: float = 0.0
    #   table: whole tables every step, exactly FuxiCTR's form; needs every table on the dense kernel (applied as
    #          the table optimiser's L2 weight decay, i.e. gradient + lambda * E on every row).
    #   batch: lambda/2 * the squared pooled rows of each sample in the batch (any kernel; a row gets its decay only
    #          when looked up, once per sample that looks it up).
    embedding_regularizer_mode: Literal["table", "batch"] = "table"


ShardingType = Literal[
    "auto", "table_wise", "column_wise", "row_wise", "table_row_wise", "table_column_wise", "data_parallel"
]


@dataclass
class ShardingConfig:
    # "auto" lets the EmbeddingShardingPlanner choose per table; anything else forces that type on every table.
    type: ShardingType = "auto"


@dataclass
class TrainingConfig:
    # Global batch size; each rank gets batch_size / world_size rows per step.
    batch_size: int = 4096
    epochs: int = 10
    # Evaluate every N training steps as well as at each epoch end; 0 = only at epoch ends.
    eval_every_steps: int = 0
    # Monitor = sum(weight * metric) over {auc, logloss}. AUC alone is the BARS setting; {auc: 1, logloss: -1}
    # (FuxiCTR's DLF config) stops runs earlier once logloss rises while AUC still improves.
    monitor: dict[str, float] = field(default_factory=lambda: {"auc": 1.0})
    early_stop_patience: int = 2
    group_auc_field: str | None = None  # also report gAUC grouped by this categorical field (docs/training.md)
    # On each non-improving evaluation every learning rate (dense and fused sparse) is multiplied by this.
    lr_decay_factor: float = 0.1
    min_lr: float = 1e-6
    seed: int = 2019
    # DataLoader worker processes per rank; "auto" = 1 when the rank has more than 2 CPU cores, else 0 (batches built
    # in the training process): on 2 cores a worker takes CPU from the step (data/loader.py: resolve_num_workers).
    num_workers: int | Literal["auto"] = "auto"
    # Everything a run writes (checkpoints, metrics.jsonl, predictions) goes under output_dir.
    output_dir: str = "runs/default"
    # Periodic checkpoints every N steps (0 = only at epoch ends); the newest `keep_checkpoints` are kept.
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    # Continue from the newest complete checkpoint in output_dir (after a crash or a TorchX/torchrun restart).
    resume: bool = True
    # Resume even if output_dir's run had another config or data (training/runfingerprint.py); off by default.
    force_resume: bool = False
    # Evaluate the restored best checkpoint on the test split (if the dataset has one).
    evaluate_test: bool = True
    progress: bool = True
    sync_batchnorm: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # glibc malloc on CPU (training/allocator.py): "tuned" keeps large blocks in the heap instead of mmap/munmap per
    # step (1.1-1.2x samples/s for DNN, DCNv2, DLF; RSS stays near the run's peak); "default" leaves glibc as it is.
    cpu_allocator: Literal["tuned", "default"] = "tuned"


@dataclass
class ExperimentConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model_name: str = "dcnv2"
    # The registered model's own config dataclass (see dlf_torchrec.models.registry).
    model: Any = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # File the config came from (for messages and relative paths); not a YAML key.
    source: str = "<defaults>"

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "source"}
        model = out.pop("model") or {}
        out["model"] = {"name": out.pop("model_name"), **model}
        return out


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float). Raise naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        k_tp, v_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, k_tp, key): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected bool (true/false), got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected str, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")  # a bug in a config dataclass, not in the YAML


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types with the key named."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown key '{full}'{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            message = str(e)
            field_named = message.split(":", 1)[0] in names  # "hidden_units: ..." -> "model.hidden_units: ..."
            raise ConfigError(f"{prefix or cls.__name__}{'.' if field_named else ': '}{message}") from e
    return obj


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["training.epochs=3", "model.hidden_units=[64,32]"]`` -> ``[(key, value)]``; values are parsed as YAML."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
        parsed.append((key.strip(), value))
    return parsed


def _check_consistency(cfg: ExperimentConfig) -> None:
    ds, tr = cfg.dataset, cfg.training
    if ds.format in ("criteo", "avazu", "libfm", "csv", "recbole") and not ds.train:
        raise ConfigError(f"dataset.train: required for format '{ds.format}'")
    if ds.format == "csv" and ds.schema is None:
        raise ConfigError("dataset.schema: required for format 'csv' (a YAML schema file or an inline mapping)")
    if len(ds.split) != 3 or any(r < 0 for r in ds.split) or abs(sum(ds.split) - 1.0) > 1e-6:
        raise ConfigError(f"dataset.split: expected three non-negative ratios summing to 1, got {ds.split}")
    for key, value in (("dataset.min_count", ds.min_count), ("dataset.chunk_rows", ds.chunk_rows),
                       ("features.embedding_dim", cfg.features.embedding_dim),
                       ("training.batch_size", tr.batch_size), ("training.epochs", tr.epochs)):
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    if not 0.0 <= ds.max_bad_fraction <= 1.0:
        raise ConfigError(f"dataset.max_bad_fraction: must be in [0, 1], got {ds.max_bad_fraction}")
    if tr.checkpoint_every_steps < 0 or tr.keep_checkpoints < 1:
        raise ConfigError("training.checkpoint_every_steps must be >= 0 and training.keep_checkpoints >= 1")
    if tr.num_workers != "auto" and tr.num_workers < 0:
        raise ConfigError(f"training.num_workers: must be >= 0 or auto, got {tr.num_workers}")
    unknown = set(tr.monitor) - {"auc", "logloss"}
    if unknown or not tr.monitor:
        raise ConfigError(f"training.monitor: keys must be among auc, logloss; got {sorted(tr.monitor)}")
    if not 0.0 < tr.lr_decay_factor <= 1.0:
        raise ConfigError(f"training.lr_decay_factor: must be in (0, 1], got {tr.lr_decay_factor}")
    opt = cfg.optimizer
    if opt.embedding_regularizer < 0:
        raise ConfigError(f"optimizer.embedding_regularizer: must be >= 0, got {opt.embedding_regularizer}")
    if opt.embedding_regularizer > 0 and opt.embedding_regularizer_mode == "table" and opt.sparse.kernel == "fused":
        raise ConfigError(
            "optimizer.embedding_regularizer_mode: 'table' (whole-table L2 every step) needs tables trained by a "
            "torch optimiser; set optimizer.sparse.kernel: dense (or auto), or embedding_regularizer_mode: batch "
            "for fused tables")
    if opt.sparse.kernel != "fused" and opt.sparse.name not in DENSE_KERNEL_OPTIMIZERS:
        raise ConfigError(
            f"optimizer.sparse.name: '{opt.sparse.name}' has no torch (dense-kernel) implementation; with "
            f"optimizer.sparse.kernel: {opt.sparse.kernel} use one of {', '.join(DENSE_KERNEL_OPTIMIZERS)}")
    if cfg.sharding.type == "data_parallel" and opt.sparse.kernel != "dense":
        raise ConfigError(
            "sharding.type: 'data_parallel' replicates every table on the dense kernel; set "
            f"optimizer.sparse.kernel: dense with a torch optimiser ({', '.join(DENSE_KERNEL_OPTIMIZERS)})")
    if opt.sparse.dense_max_rows < 0:
        raise ConfigError(f"optimizer.sparse.dense_max_rows: must be >= 0, got {opt.sparse.dense_max_rows}")
    if cfg.features.init_std <= 0:
        raise ConfigError(f"features.init_std: must be > 0, got {cfg.features.init_std}")
    # Model configs that depend on the embedding size (e.g. TF4CTR SER needs an even d) check it here.
    check_dim = getattr(cfg.model, "check_embedding_dim", None)
    if callable(check_dim):
        try:
            check_dim(cfg.features.embedding_dim)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def build_config(
    raw: dict[str, Any], source: str = "<dict>", overrides: list[str] | None = None, validate_model: bool = True
) -> ExperimentConfig:
    """Validate a raw mapping (plus overrides) into an :class:`ExperimentConfig`.

    ``validate_model=False`` leaves ``cfg.model`` None and skips the model section (which needs the model registry,
    i.e. torch + torchrec, ~4 s of imports): for tools that only read ``dataset`` (the preprocessing CLI).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    try:
        for key, value in parse_overrides(overrides or []):
            _set_path(raw, key, value)
        model_section = raw.pop("model", None) or {}
        if not isinstance(model_section, dict):
            raise ConfigError(f"model: expected a mapping with a 'name' key, got {type(model_section).__name__} "
                              f"{model_section!r}")
        model_raw = dict(model_section)
        model_name = model_raw.pop("name", "dcnv2")
        if not isinstance(model_name, str):
            raise ConfigError(f"model.name: expected str, got {model_name!r}")
        cfg = from_dict(ExperimentConfig, {k: v for k, v in raw.items()})
        cfg.model_name = model_name
        if validate_model:
            from dlf_torchrec.models.registry import model_config_class  # models are registered on import

            try:
                model_cls = model_config_class(model_name)
            except ValueError as e:
                raise ConfigError(f"model.name: {e}") from None
            cfg.model = from_dict(model_cls, model_raw, "model")
        cfg.source = source
        _check_consistency(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None, validate_model: bool = True
) -> ExperimentConfig:
    """Load and validate an experiment YAML (the synthetic default when ``path`` is None); see :func:`build_config`.

    Includes (``defaults:``) are merged first; a config error names the file that set the offending key.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    origins: dict[str, str] = {}
    raw = read_config_tree(path, origins)
    try:
        cfg = build_config(raw, str(path), overrides, validate_model)
    except ConfigError as e:
        message = str(e).removeprefix(f"{path}: ")
        origin = origin_of(message, origins)
        if origin is None or Path(origin) == path.resolve():
            raise
        raise ConfigError(f"{origin} (included by {path}): {message}") from None
    return cfg
