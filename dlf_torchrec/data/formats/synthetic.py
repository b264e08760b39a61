"""``synthetic``: generated Criteo-format TSV with a planted signal (:mod:`dlf_torchrec.data.synthetic`), read as
``criteo``. Its raw file is generated into ``output_dir/raw/train.tsv`` (``synthetic_rows`` rows, seed
``synthetic_seed``) before preprocessing."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from dlf_torchrec.data.formats import criteo
from dlf_torchrec.data.formats.base import Format


def generate(cfg: Any) -> Any:
    """Write the raw file of dataset config ``cfg``; returns the config reading it (train only)."""
    from dlf_torchrec.data.synthetic import generate_criteo_tsv

    raw = os.path.join(cfg.output_dir, "raw", "train.tsv")
    generate_criteo_tsv(raw, cfg.synthetic_rows, cfg.synthetic_seed)
    return dataclasses.replace(cfg, train=raw, valid=None, test=None)


FORMAT = Format("synthetic", criteo.FORMAT.schema, reads="criteo", generate=generate)
