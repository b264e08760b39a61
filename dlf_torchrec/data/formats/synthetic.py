"""``synthetic``: generated Criteo-format TSV drawn from a known teacher (:mod:`dlf_torchrec.data.synthetic`), read
as ``criteo``. Its raw file is generated into ``output_dir/raw/train.tsv`` (``synthetic_rows`` rows, seed
``synthetic_seed``) before preprocessing; afterwards each split gets its rows' true click probabilities."""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

from dlf_torchrec.data.formats import criteo
from dlf_torchrec.data.formats.base import Format


def raw_path(cfg: Any) -> str:
    """The generated raw TSV of dataset config ``cfg``."""
    return os.path.join(cfg.output_dir, "raw", "train.tsv")


def generate(cfg: Any) -> Any:
    """Write the raw file of dataset config ``cfg``; returns the config reading it (train only)."""
    from dlf_torchrec.data.synthetic import generate_criteo_tsv

    shutil.rmtree(os.path.join(cfg.output_dir, "baselines"), ignore_errors=True)  # trained on the old data
    generate_criteo_tsv(raw_path(cfg), cfg.synthetic_rows, cfg.synthetic_seed)
    return dataclasses.replace(cfg, train=raw_path(cfg), valid=None, test=None)


def finish(cfg: Any, data_dir: str) -> None:
    from dlf_torchrec.data.synthetic import write_split_probabilities

    write_split_probabilities(data_dir, raw_path(cfg), cfg.split, cfg.split_seed)


def is_complete(data_dir: str) -> bool:
    from dlf_torchrec.data.synthetic import has_split_probabilities

    return has_split_probabilities(data_dir)


FORMAT = Format("synthetic", criteo.FORMAT.schema, reads="criteo", generate=generate, finish=finish,
                is_complete=is_complete)
