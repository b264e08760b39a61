"""Loading a trained run: its config, dataset meta and vocabularies, and a checkpoint -> the unsharded model on CPU.

A run directory holds ``config.yaml`` (written by the trainer) and ``checkpoints/<name>``; the dataset directory is
the config's ``dataset.output_dir`` (or one given explicitly). Used by scoring (:mod:`dlf_torchrec.predict`) and
export (:mod:`dlf_torchrec.export`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlf_torchrec import io
from dlf_torchrec.config import ExperimentConfig, load_config
from dlf_torchrec.data.formats import raw_format
from dlf_torchrec.data.jagged import bag_tensors, batch_kjt
from dlf_torchrec.data.meta import META_FILE, VOCAB_FILE, DatasetMeta, FeatureSpec
from dlf_torchrec.data.shards import Bags


class RunError(RuntimeError):
    """A problem with the run directory, its checkpoint or its data directory."""


@dataclass
class Run:
    """A trained run as scoring and export need it: its config, dataset meta, vocabularies and checkpoint path."""

    cfg: ExperimentConfig
    meta: DatasetMeta
    data_dir: str
    vocab: dict[str, list[str]]
    checkpoint: str

    @property
    def source_format(self) -> str:
        """Raw format of the training data (synthetic data is Criteo TSV)."""
        return raw_format(self.cfg.dataset.format)

    @property
    def keys(self) -> list[str]:
        """Categorical field names in model input order."""
        return [f.name for f in self.meta.categorical]


def resolve_data_dir(cfg: ExperimentConfig, run_dir: str, override: str | None = None) -> str:
    """The preprocessed dataset directory: ``override``, else ``dataset.output_dir`` as given, relative to the
    current directory or the run directory's parent (the first holding ``meta.json``)."""
    if override is not None:
        return override
    path = cfg.dataset.output_dir
    absolute = os.path.isabs(path) or not io.is_local(path) or not io.is_local(run_dir)
    candidates = [path] if absolute else [path, os.path.join(os.path.dirname(os.path.abspath(run_dir)), path)]
    for c in candidates:
        if io.exists(os.path.join(c, META_FILE)):
            return c
    raise RunError(f"dataset directory of the run not found (tried {', '.join(candidates)}); pass --data-dir")


def resolve_checkpoint(run_dir: str, checkpoint: str) -> str:
    """``checkpoint``: a name under ``<run>/checkpoints`` (``best``, ``step_00000120``) or a path."""
    from dlf_torchrec.training.checkpoint import exists

    path = checkpoint if exists(checkpoint) else os.path.join(run_dir, "checkpoints", checkpoint)
    if not exists(path):
        raise RunError(f"checkpoint not found: {path}")
    return path


def load_run(run_dir: str, checkpoint: str = "best", data_dir: str | None = None) -> Run:
    """Read ``<run_dir>/config.yaml``, the dataset's ``meta.json`` and ``vocab.json``; locate the checkpoint."""
    config_path = os.path.join(run_dir, "config.yaml")
    if not io.exists(config_path):
        raise RunError(f"{config_path} not found: not a training run directory")
    cfg = load_config(config_path) if io.is_local(config_path) else _load_remote_config(config_path)
    directory = resolve_data_dir(cfg, run_dir, data_dir)
    if not io.is_local(directory):  # scoring reads the validation split's shards (OOV rates)
        directory = io.stage_dir(directory, META_FILE)
    meta = DatasetMeta.load(directory)
    vocab = io.read_json(os.path.join(directory, VOCAB_FILE))
    return Run(cfg, meta, directory, vocab, resolve_checkpoint(run_dir, checkpoint))


def _load_remote_config(uri: str) -> ExperimentConfig:
    """The trainer-written ``config.yaml`` at ``uri`` (its input paths are absolute: read from a local copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "config.yaml")
        with open(local, "wb") as f:
            f.write(io.read_bytes(uri))
        return load_config(local)


def build_unsharded(cfg: ExperimentConfig, spec: FeatureSpec, device: Any = "cpu") -> nn.Module:
    """The (freshly initialised) unsharded model that ``cfg`` describes, on features ``spec``."""
    from dlf_torchrec.training.stack import build_task

    return build_task(cfg, spec, torch.device(device)).model


def load_model(run: Run) -> nn.Module:
    """The unsharded model on CPU with the checkpoint's weights, in eval mode."""
    from dlf_torchrec.training.checkpoint import load_unsharded

    model = build_unsharded(run.cfg, run.meta.feature_spec)
    load_unsharded(run.checkpoint, model)
    return model.eval()


def to_kjt(sparse: torch.Tensor, keys: list[str] | FeatureSpec, bags: list[Bags] | None = None) -> KeyedJaggedTensor:
    """ids int64 [B, F] (+ one :class:`Bags` per bag field of a spec with bag fields) -> the loader's KJT layout
    (:mod:`dlf_torchrec.data.jagged`); ``keys``: the categorical field names, or the dataset's feature spec."""
    if isinstance(keys, FeatureSpec):
        return batch_kjt(keys, sparse, *bag_tensors(bags or [], sparse.shape[0]))
    values = sparse.t().reshape(-1)
    return KeyedJaggedTensor(keys=keys, values=values, lengths=torch.ones(values.numel(), dtype=torch.int32))
