"""Reading raw input in chunks: opening (``-`` = stdin, ``.gz`` through gzip), header detection, byte-range and
line-count chunks, and the one record of rejected rows (:class:`Rejections`).

Preprocessing cuts plain files into byte ranges that worker processes read themselves (:func:`file_chunks`);
gzip input is cut here into blocks of exactly ``chunk_rows`` lines. Scoring reads any stream in blocks of a given
number of lines (:func:`line_blocks`, which cuts the gzip input too).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import gzip
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import numpy as np

from dlf_torchrec.data.schema import Schema, line_names

READ_BYTES = 16 << 20
MAX_EXAMPLES = 10

RejectList = list[tuple[int, str, str]]  # (line index within the chunk, reason, detail)
T = TypeVar("T")


class BadRowError(ValueError):
    """A malformed row under ``bad_rows: fail``; the message is ``file:line: reason``."""


class DataError(ValueError):
    """The data cannot give a meaningful run (no usable rows, too many bad rows, a one-class validation split)."""


class Rejections:
    """Malformed rows: ``fail`` raises :class:`BadRowError` (``file:line: reason``) at the first one, ``skip``
    counts them by reason and keeps the first :data:`MAX_EXAMPLES` as ``file:line: reason (detail)``."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.by_reason: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self.total = 0

    def add(self, name: str, first_line: int, rejected: Iterable[tuple[int, str, str]]) -> None:
        """Record a chunk's rejections; ``first_line`` is the 1-based line number of the chunk's first line."""
        for idx, reason, detail in rejected:
            text = f"{name}:{first_line + idx}: {reason}" + (f" ({detail})" if detail else "")
            if self.policy == "fail":
                raise BadRowError(text)
            self.by_reason[reason] += 1
            self.total += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(text)

    def merge(self, other: Rejections) -> None:
        self.by_reason.update(other.by_reason)
        self.total += other.total
        self.examples.extend(other.examples[:MAX_EXAMPLES - len(self.examples)])

    def top(self) -> str:
        """The three commonest reasons and the first example, for a one-line message."""
        reasons = ", ".join(f"{n:,} x {reason}" for reason, n in self.by_reason.most_common(3))
        return f"top reasons: {reasons}; e.g. {self.examples[0]}" if self.examples else "no rows rejected"


def report_rejections(tag: str, by_reason: dict[str, int], examples: list[str]) -> None:
    """Counts by reason and the kept examples on stderr, each line prefixed by ``tag``."""
    for reason, n in sorted(by_reason.items()):
        print(f"{tag}   {n:,} x {reason}", file=sys.stderr)
    for ex in examples:
        print(f"{tag}   e.g. {ex}", file=sys.stderr)


def _naming_the_file(read: Callable[..., T]) -> Callable[..., T]:
    """``read`` of :class:`GzipInput` raising a :class:`DataError` that names the file for a gzip decoding error."""
    @functools.wraps(read)
    def checked(self: GzipInput, *args: Any) -> T:
        try:
            return read(self, *args)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise self.decoding_error(e) from e
    return checked


class GzipInput(gzip.GzipFile):
    """A ``.gz`` input file whose decoding errors are :class:`DataError` naming the file and how much of it was
    decompressed (gzip raises a bare ``EOFError`` for a truncated file, naming nothing)."""

    read = _naming_the_file(gzip.GzipFile.read)
    read1 = _naming_the_file(gzip.GzipFile.read1)
    readinto = _naming_the_file(gzip.GzipFile.readinto)
    readline = _naming_the_file(gzip.GzipFile.readline)  # line iteration calls it too
    peek = _naming_the_file(gzip.GzipFile.peek)

    def decoding_error(self, error: Exception) -> DataError:
        done = f"after {self.tell()} bytes of decompressed data"
        if isinstance(error, EOFError):
            return DataError(f"{self.name}: truncated gzip input {done}")
        return DataError(f"{self.name}: bad gzip input {done}: {error}")


def open_input(path: str) -> IO[bytes]:
    """``-`` = stdin; ``.gz`` is read through gzip (:class:`GzipInput`)."""
    if path == "-":
        return sys.stdin.buffer
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    return GzipInput(path, "rb") if path.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def header_line(path: str, schema: Schema) -> bytes:
    """The header line of file ``path`` (with its terminator), or ``b""`` if it has none."""
    if not schema.header:
        return b""
    with open_input(path) as f:
        first = f.readline()
    return first if first and schema.is_header(first) else b""


def header_bytes(path: str, schema: Schema) -> int:
    """Length of the header line of file ``path`` to skip (0 if none)."""
    return len(header_line(path, schema))


def header_order(schema: Schema, line: bytes) -> Schema:
    """``schema`` reading each column from where header ``line`` names it (matched by name, in any order).

    Raises :class:`DataError` (one line, without the file name) when a schema column is missing from the header,
    or the header names a column the schema does not have, or names one twice.
    """
    names = line_names(line, schema.delimiter, schema.typed_header)
    expected = [c.name for c in schema.columns]
    counts = collections.Counter(names)
    problems = [f"{what} {bad}" for what, bad in (
        ("missing", [n for n in expected if n not in counts]),
        ("unexpected", [n for n in counts if n not in expected]),
        ("repeated", [n for n, k in counts.items() if k > 1 and n in expected])) if bad]
    if problems:
        raise DataError(f"header columns do not match the schema: {'; '.join(problems)}; "
                        f"expected (in any order) {expected}")
    order = tuple(names.index(n) for n in expected)
    return dataclasses.replace(schema, positions=None if order == tuple(range(len(order))) else order)


def file_schema(path: str, schema: Schema) -> Schema:
    """``schema`` as file ``path`` lays it out: columns in its header's order when it has a header line
    (:func:`header_order`); a mismatched header is a :class:`DataError` naming the file. A built-in format
    (``header: auto``) also reads a header naming its columns under another common delimiter, and a file that is
    neither its own layout nor that one fails with a hint to the csv schema (:func:`other_layout`)."""
    line = header_line(path, schema)
    if not line:
        return other_layout(path, schema) if schema.header == "auto" else schema
    try:
        return header_order(schema, line)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


# Delimiters tried on the first line of a built-in format's file that does not split as the format says.
DELIMITERS = "\t,;|"


def other_layout(path: str, schema: Schema) -> Schema:
    """For a file of a fixed-schema format whose first line is no header under its delimiter: ``schema`` with
    another delimiter when the first line names its columns under that one; a :class:`DataError` with a hint to
    ``format: csv`` when the first line is a header with other names or splits into the format's column count only
    under another delimiter; else ``schema`` (a malformed first row is one bad row, as any other)."""
    with open_input(path) as f:
        first = f.readline()
    expected = sorted(c.name for c in schema.columns)
    others = [d for d in DELIMITERS if d != schema.delimiter]
    for d in others:
        if sorted(line_names(first, d)) == expected:
            return header_order(dataclasses.replace(schema, delimiter=d, header=True), first)
    hint = (f"format {schema.format} reads {schema.n_columns} {schema.delimiter!r}-separated columns named "
            f"{', '.join(expected[:3])}, ...; read this file with format: csv and a dataset.schema "
            f"(docs/data.md#format-csv)")
    label = schema.label_index
    for d in (schema.delimiter, *others):
        names = line_names(first, d)
        if len(names) == schema.n_columns and (names[label][:1].isalpha() or names[label][:1] == "_"):
            raise DataError(f"{path}: the first line is a header ({', '.join(names[:3])}, ...) with other column "
                            f"names; {hint}")
    for d in others:
        if len(line_names(first, d)) == schema.n_columns and schema.count_columns(first) != schema.n_columns:
            raise DataError(f"{path}: the first line splits into {schema.n_columns} {d!r}-separated columns; {hint}")
    return schema


def first_nonblank_line(path: str) -> bytes:
    """The first non-blank line of file ``path`` (e.g. to count libFM fields)."""
    with open_input(path) as f:
        for line in f:
            if line.strip():
                return line
    raise DataError(f"{path}: no data rows (empty file): cannot detect the number of libFM fields")


# ------------------------------------------------------------------------------------ file chunks (preprocessing)


@dataclass
class FileChunk:
    """One chunk: in memory (``buf``, gzip input) or the lines starting in bytes [lo, hi) of ``path`` (read by
    the worker). ``offset``: byte offset of the chunk in the (decompressed) file, known once read."""

    file_idx: int
    chunk_idx: int
    buf: bytes | None = None
    offset: int = 0
    path: str = ""
    lo: int = 0
    hi: int = 0
    base: int = 0

    def read(self) -> tuple[bytes, int]:
        """(chunk bytes, their byte offset in the file)."""
        if self.buf is not None:
            return self.buf, self.offset
        with open(self.path, "rb") as f:
            start = self.lo
            if self.lo > self.base:  # skip the line that started in the previous chunk
                f.seek(self.lo - 1)
                start = self.lo - 1 + len(f.readline())
            if start >= self.hi:
                return b"", start
            f.seek(start)
            data = f.read(self.hi - start)
            if data and not data.endswith(b"\n"):  # complete the last line started inside [lo, hi)
                data += f.readline()
            return data, start


def _nth_newline(buf: bytes, n: int) -> int:
    """Offset of the n-th (1-based) newline of ``buf`` (which has at least n)."""
    if n <= 4096:
        pos = -1
        for _ in range(n):
            pos = buf.find(b"\n", pos + 1)
        return pos
    return int(np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)[n - 1])


def file_chunks(path: str, file_idx: int, schema: Schema, chunk_rows: int) -> Iterator[FileChunk]:
    """Chunks of one file (header skipped). Plain files: byte ranges of about ``chunk_rows`` lines (estimated from
    the first MiB), read by the workers themselves. Gzip: blocks of exactly ``chunk_rows`` lines read here."""
    base = header_bytes(path, schema)
    if not path.endswith(".gz"):
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(base)
            sample = f.read(1 << 20)
        per_line = max(len(sample) / max(sample.count(b"\n"), 1), 1.0)
        step = max(int(chunk_rows * per_line), 1)
        for chunk_idx, lo in enumerate(range(base, size, step)):
            yield FileChunk(file_idx, chunk_idx, path=path, lo=lo, hi=min(lo + step, size), base=base)
        return
    with open_input(path) as f:
        if base:
            f.readline()
        yield from _gzip_blocks(f, file_idx, chunk_rows, base)


def _gzip_blocks(f: IO[bytes], file_idx: int, chunk_rows: int, offset: int) -> Iterator[FileChunk]:
    """:func:`line_blocks` of a stream as chunks, with their byte offsets from ``offset`` on."""
    for chunk_idx, piece in enumerate(line_blocks(f, chunk_rows)):
        yield FileChunk(file_idx, chunk_idx, buf=piece, offset=offset)
        offset += len(piece)


def line_blocks(f: IO[bytes], rows: int, first: bytes = b"") -> Iterator[bytes]:
    """Blocks of exactly ``rows`` lines (the last one shorter; a final line may lack its newline) of ``first``
    followed by the rest of stream ``f``, read ``READ_BYTES`` at a time: memory is bounded by ``rows`` lines plus
    one read, whatever the input's size."""
    blocks, counts = ([first], [first.count(b"\n")]) if first else ([], [])
    total = sum(counts)
    eof = False
    while True:
        if total < rows and not eof:
            block = f.read(READ_BYTES)
            if block:
                blocks.append(block)
                counts.append(block.count(b"\n"))
                total += counts[-1]
            else:
                eof = True
            continue
        if total >= rows:
            last, last_n = blocks[-1], counts[-1]
            need = rows - (total - last_n)
            cut = _nth_newline(last, need) + 1
            piece = b"".join(blocks[:-1]) + last[:cut]
            rest = last[cut:]
            blocks, counts = ([rest], [last_n - need]) if rest else ([], [])
            total = last_n - need
        else:  # end of input: the rest (a final line may lack its newline)
            piece = b"".join(blocks)
            blocks, counts, total = [], [], 0
            if not piece:
                return
        yield piece
