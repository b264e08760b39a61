"""``avazu``: Kaggle Avazu CSV, 24 columns ``id,click,hour,C1,banner_pos,...,C21``.

``id`` is dropped, the label is ``click``; ``hour`` (YYMMDDHH) becomes three categorical fields ``hour`` (chars
6:8), ``weekday`` (%w of 20YY-MM-DD, 0 = Sunday) and ``weekend`` (1 if weekday in {6, 0}). Output order follows
BARS Avazu_x4: hour, C1..C21 columns, weekday, weekend. A first line starting with ``id,click`` is a header.
"""

from __future__ import annotations

import numpy as np

from dlf_torchrec.data.fastparse import FastParser, FastResult, Fields, label01
from dlf_torchrec.data.formats.base import Format
from dlf_torchrec.data.schema import Column, ColumnKind, Schema

AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
    "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)


def avazu_schema() -> Schema:
    cols = []
    for name in AVAZU_COLUMNS:
        kind: ColumnKind = {"id": "skip", "click": "label", "hour": "hour"}.get(name, "categorical")  # type: ignore
        cols.append(Column(name, kind))
    cat = ("hour",) + AVAZU_COLUMNS[3:] + ("weekday", "weekend")
    return Schema("avazu", tuple(cols), cat, delimiter=",", header="auto", header_prefix=b"id,click")


def fast_avazu(f: Fields) -> FastResult:
    ok, labels = label01(f, 1)
    hk, hl = f.window(slice(2, 3))
    hb = hk[:, 0].astype(">u8").view(np.uint8).reshape(-1, 8).astype(np.int64)
    ok &= (hl[:, 0] == 8) & ((hb >= 48) & (hb <= 57)).all(-1)
    d = hb - 48
    yy, mm, dd, hh = d[:, 0] * 10 + d[:, 1], d[:, 2] * 10 + d[:, 3], d[:, 4] * 10 + d[:, 5], d[:, 6] * 10 + d[:, 7]
    ok &= (mm >= 1) & (mm <= 12) & (hh <= 23) & (dd >= 1)
    months = (30 + yy) * 12 + np.clip(mm - 1, 0, 11)  # months since 1970-01
    first_day = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    next_first = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    ok &= dd <= next_first - first_day
    weekday = (first_day + dd - 1 + 4) % 7  # 1970-01-01 was a Thursday (%w = 4)
    ck, cl = f.window(slice(3, 24))
    ok &= (cl <= 8).all(1)
    hour_key = (hb[:, 6].astype(np.uint64) << np.uint64(56)) | (hb[:, 7].astype(np.uint64) << np.uint64(48))
    wd_key = (weekday + 48).astype(np.uint64) << np.uint64(56)
    we_key = np.where((weekday == 6) | (weekday == 0), 49, 48).astype(np.uint64) << np.uint64(56)
    keys = np.concatenate([hour_key[:, None], ck, wd_key[:, None], we_key[:, None]], axis=1)
    return ok, labels, np.zeros((len(ok), 0), dtype=np.float64), keys


FORMAT = Format("avazu", lambda spec, num_fields: avazu_schema(), FastParser(fast_avazu, ord(",")))
