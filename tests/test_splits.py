"""Random splits by content: a row's split is a seeded hash of its bytes, so inserting/deleting rows moves no other
row, identical rows share a split, and data preprocessed under the old (byte offset) rule is rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlf_torchrec.config import DatasetConfig
from dlf_torchrec.data.meta import META_FILE, DatasetMeta
from dlf_torchrec.data.preprocess import ensure_preprocessed
from dlf_torchrec.data.shards import open_split
from dlf_torchrec.data.splits import SPLIT_RULE, content_ends, line_hashes, random_splits

RATIOS = (0.8, 0.1, 0.1)


def row(i: int) -> str:
    """A Criteo line whose I1 is ``i + 1`` (the row's identity after preprocessing with ``numeric: dense``)."""
    return "\t".join([str(i % 2), str(i + 1), *["1"] * 12, *[f"{(i * (j + 3)) % 50:08x}" for j in range(26)]])


def cfg_for(tmp_path: Path, train: Path, out: str, **kw) -> DatasetConfig:
    return DatasetConfig(**{"name": "t", "format": "criteo", "train": str(train), "output_dir": str(tmp_path / out),
                            "numeric": "dense", "chunk_rows": 300, "progress": False, **kw})


def ids_by_split(out: str) -> dict[str, np.ndarray]:
    """{split: the row identities (I1 - 1) it holds, in its order}."""
    meta = DatasetMeta.load(out)
    return {s: np.rint(np.expm1(np.asarray(open_split(out, s, meta).dense)[:, 0])).astype(np.int64) - 1
            for s in meta.splits}


def splits_of(lines: list[bytes], seed: int = 2018, sep: bytes = b"\n") -> np.ndarray:
    buf = b"".join(line + sep for line in lines)
    starts = np.concatenate([[0], np.cumsum([len(line) + len(sep) for line in lines])[:-1]]).astype(np.int64)
    return random_splits(RATIOS, seed, buf, starts, content_ends(buf, starts))


def test_inserting_or_deleting_a_row_moves_no_other_row(tmp_path: Path) -> None:
    lines = [row(i) for i in range(2000)]
    edited = [*lines[:3], row(4999), *lines[3:10], *lines[11:]]  # a longer row inserted, row 10 deleted
    (tmp_path / "a.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "b.tsv").write_text("\n".join(edited) + "\n")
    a = ids_by_split(ensure_preprocessed(cfg_for(tmp_path, tmp_path / "a.tsv", "a")))
    b = ids_by_split(ensure_preprocessed(cfg_for(tmp_path, tmp_path / "b.tsv", "b")))
    assert set(a) == set(b) == {"train", "valid", "test"} and all(len(v) > 100 for v in a.values())
    for s in a:
        assert np.array_equal(a[s][a[s] != 10], b[s][b[s] != 4999]), s


def test_duplicate_rows_share_a_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.repeat(np.arange(300), rng.integers(1, 5, 300)))
    # Half of the copies end in \r\n, and the last line has no terminator: the content alone decides.
    text = "".join(row(int(i)) + ("\r\n" if k % 2 else "\n") for k, i in enumerate(ids)).rstrip("\r\n")
    (tmp_path / "dup.tsv").write_text(text, newline="")
    got = ids_by_split(ensure_preprocessed(cfg_for(tmp_path, tmp_path / "dup.tsv", "dup")))
    where: dict[int, set[str]] = {}
    for s, held in got.items():
        for i in held.tolist():
            where.setdefault(i, set()).add(s)
    assert sorted(where) == list(range(300)) and all(len(v) == 1 for v in where.values())
    assert sum(len(v) for v in got.values()) == len(ids)


def test_split_proportions_follow_the_ratios() -> None:
    lines = [f"{i}\t{i * 7919 % 100_003:x}\tab".encode() for i in range(100_000)]
    split = splits_of(lines)
    assert np.abs(np.bincount(split, minlength=3) / len(lines) - RATIOS).max() < 0.005  # ~5 sigma at 100k
    assert (splits_of(lines, seed=7) != split).mean() > 0.25  # the seed matters
    only = random_splits((0.9, 0.0, 0.1), 1, b"".join(lines), *_spans(lines))
    assert 1 not in only and abs((only == 2).mean() - 0.1) < 0.005


def _spans(lines: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(line) for line in lines], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return starts, starts + lengths


def test_hash_is_a_function_of_the_bytes_only() -> None:
    rng = np.random.default_rng(1)
    lines = [b"", b"a", b"12345678", b"123456789", *(rng.integers(1, 256, n, dtype=np.uint8).tobytes()
                                                   for n in rng.integers(1, 1500, 200))]
    order = rng.permutation(len(lines))
    shuffled = [lines[i] for i in order]
    junk = b"\x07" * 13  # another alignment
    h1 = line_hashes(5, b"".join(lines), *_spans(lines))
    s2, e2 = _spans(shuffled)
    h2 = line_hashes(5, junk + b"".join(shuffled), s2 + len(junk), e2 + len(junk))
    assert np.array_equal(h1[order], h2)
    assert len(set(h1.tolist())) == len(lines)  # distinct contents, distinct hashes
    long = rng.integers(1, 256, 1200, dtype=np.uint8).tobytes()
    flipped = long[:-1] + bytes([long[-1] ^ 1])  # one byte changed, past the first window of 512 bytes
    assert len(set(line_hashes(5, long + flipped, *_spans([long, flipped])).tolist())) == 2


def test_content_ends_drop_the_terminator() -> None:
    buf = b"ab\r\ncd\n\n\r\nef"
    assert content_ends(buf, np.array([0, 4, 7, 8, 10])).tolist() == [2, 6, 7, 8, 12]
    same = splits_of([b"x\ty", b"x\ty"], sep=b"\r\n").tolist() + splits_of([b"x\ty"]).tolist()
    assert len(set(same)) == 1


def test_data_split_by_the_old_rule_is_preprocessed_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.tsv").write_text("".join(row(i) + "\n" for i in range(100)))
    cfg = cfg_for(tmp_path, tmp_path / "a.tsv", "out")
    meta_path = tmp_path / "out" / META_FILE
    assert DatasetMeta.load(ensure_preprocessed(cfg)).split_rule == SPLIT_RULE
    raw = json.loads(meta_path.read_text())
    del raw["split_rule"]  # as written before the content rule
    meta_path.write_text(json.dumps(raw))
    capsys.readouterr()
    assert DatasetMeta.load(ensure_preprocessed(cfg)).split_rule == SPLIT_RULE
    assert f"random split rule was 'line byte offset', now '{SPLIT_RULE}'" in capsys.readouterr().err
    # Splits from files do not depend on the rule: such data is neither recorded with one nor rebuilt.
    files = cfg_for(tmp_path, tmp_path / "a.tsv", "files", valid=str(tmp_path / "a.tsv"))
    assert DatasetMeta.load(ensure_preprocessed(files)).split_rule is None
    stamp = (tmp_path / "files" / META_FILE).stat().st_mtime_ns
    ensure_preprocessed(files)
    assert (tmp_path / "files" / META_FILE).stat().st_mtime_ns == stamp
