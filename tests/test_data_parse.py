"""Row parsers per format, the vectorised chunk parser's agreement with them, and csv schema validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlf_torchrec.data import parse as P
from dlf_torchrec.data import rawinput
from dlf_torchrec.data.formats import schema_for
from dlf_torchrec.data.formats.avazu import avazu_schema
from dlf_torchrec.data.formats.criteo import criteo_schema
from dlf_torchrec.data.formats.csv import csv_schema
from dlf_torchrec.data.formats.libfm import detect_libfm_fields, libfm_schema
from dlf_torchrec.data.schema import SchemaError

CRITEO = criteo_schema()
AVAZU = avazu_schema()


def criteo_line(label: str = "1", ints: list[str] | None = None, cats: list[str] | None = None) -> str:
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label, *ints, *cats])


AVAZU_LINE = ("1000009418151094273,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,"
              "a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79")


def reason(schema, line) -> str:
    with pytest.raises(P.RowRejected) as e:
        P.parse_line(schema, line)
    return e.value.reason


def test_criteo_row_typed_values_and_missing() -> None:
    ints = ["", "-3", "0", "42"] + ["7"] * 9
    cats = ["", "DEADbeef", "a"] + ["0123abcd"] * 23
    row = P.parse_line(CRITEO, criteo_line("0", ints, cats) + "\r\n")
    assert row.label == 0.0
    assert row.numeric[:4] == (None, -3.0, 0.0, 42.0)
    assert row.categorical[:3] == (b"", b"DEADbeef", b"a")
    assert len(row.numeric) == 13 and len(row.categorical) == 26


@pytest.mark.parametrize("line, expected", [
    ("", P.BLANK),
    ("   \t  ", P.BLANK),
    ("1\t2\t3", P.FIELD_COUNT),
    (criteo_line() + "\textra", P.FIELD_COUNT),
    (criteo_line(ints=["1.5"] + ["1"] * 12), P.NON_INT),
    (criteo_line(ints=["1"] * 12 + ["--1"]), P.NON_INT),
    (criteo_line(ints=["-"] + ["1"] * 12), P.NON_INT),
    (criteo_line(ints=["1" * 19] + ["1"] * 12), P.INT_RANGE),
    (criteo_line(cats=["xyz12345"] + ["a"] * 25), P.NON_HEX),
    (criteo_line(cats=["a"] * 25 + ["123456789"]), P.NON_HEX),
    (criteo_line(label="2"), P.BAD_LABEL),
    (criteo_line(label=""), P.BAD_LABEL),
    (criteo_line(label="-1"), P.BAD_LABEL),
    (criteo_line() + "\x00", P.NUL_BYTE),
])
def test_criteo_rejections(line: str, expected: str) -> None:
    assert reason(CRITEO, line) == expected


def test_criteo_max_int_accepted() -> None:
    row = P.parse_line(CRITEO, criteo_line(ints=["9" * 18, "-" + "9" * 18] + ["1"] * 11))
    assert row.numeric[0] == float(int("9" * 18)) and row.numeric[1] == -float(int("9" * 18))


def test_avazu_hour_derivation_on_known_dates() -> None:
    row = P.parse_line(AVAZU, AVAZU_LINE)  # 2014-10-21 was a Tuesday
    assert AVAZU.categorical_fields[0] == "hour" and AVAZU.categorical_fields[-2:] == ("weekday", "weekend")
    assert row.categorical[0] == b"00" and row.categorical[-2:] == (b"2", b"0")
    assert row.label == 0.0 and len(row.categorical) == 24 and row.numeric == ()
    sunday = AVAZU_LINE.replace("14102100", "14102623")  # 2014-10-26 was a Sunday
    r2 = P.parse_line(AVAZU, sunday)
    assert r2.categorical[0] == b"23" and r2.categorical[-2:] == (b"0", b"1")
    saturday = P.parse_line(AVAZU, AVAZU_LINE.replace("14102100", "14102512"))
    assert saturday.categorical[-2:] == (b"6", b"1")
    assert P.hour_tokens(b"16022910") == (b"10", b"1", b"0")  # leap day 2016-02-29, a Monday
    assert row.categorical[1] == b"1005" and row.categorical[AVAZU.categorical_fields.index("C20")] == b"-1"


@pytest.mark.parametrize("hour", ["14023000", "14102124", "1410210", "141021000", "1410x100", "14132100", "",
                                  "14100000"])
def test_avazu_bad_hour(hour: str) -> None:
    assert reason(AVAZU, AVAZU_LINE.replace("14102100", hour)) == P.BAD_HOUR


def test_avazu_other_rejections() -> None:
    assert reason(AVAZU, AVAZU_LINE.replace(",0,14102100", ",yes,14102100")) == P.BAD_LABEL
    assert reason(AVAZU, AVAZU_LINE + ",x") == P.FIELD_COUNT
    assert reason(AVAZU, AVAZU_LINE.replace("1fbe01fe", "z" * 300)) == P.TOKEN_TOO_LONG


def test_libfm_rows() -> None:
    schema = libfm_schema(3)
    row = P.parse_line(schema, "-1 12:1 345:1 6:0.5\n")
    assert row.label == 0.0 and row.categorical == (b"12", b"345", b"6")
    assert P.parse_line(schema, "1\t1:1  2:1 3:1").label == 1.0
    assert P.parse_line(schema, "+1 1:1 2:1 3:1").label == 1.0
    assert reason(schema, "1 1:1 2:1") == P.FIELD_COUNT
    assert reason(schema, "1 1:1 2 3:1") == P.BAD_ITEM
    assert reason(schema, "1 1:1 :2 3:1") == P.BAD_ITEM
    assert reason(schema, "2 1:1 2:1 3:1") == P.BAD_LABEL
    assert reason(schema, "  ") == P.BLANK
    assert detect_libfm_fields("1 266:1 1244:1 5042:1") == 3


def test_float_formatted_criteo_integers() -> None:
    row = P.parse_line(CRITEO, criteo_line(ints=["104.0", "-1.", "-1.000", "0.0", "7", *[""] * 7, "3.00"]))
    assert row.numeric[:5] == (104.0, -1.0, -1.0, 0.0, 7.0) and row.numeric[12] == 3.0
    for bad in ("1.5", "1e3", ".0", "1.0.0", "1,0", "-.0"):
        assert reason(CRITEO, criteo_line(ints=[bad, *["1"] * 12])) == P.NON_INT, bad
    assert reason(CRITEO, criteo_line(ints=["9" * 19 + ".0", *["1"] * 12])) == P.INT_RANGE
    header = ",".join(["id", *AVAZU_LINE.split(",")[1:]])
    names = "click,id,hour," + ",".join(c.name for c in AVAZU.columns[3:])
    assert AVAZU.is_header(names.encode()) and not AVAZU.is_header(header.encode())


def test_csv_schema_rows_and_validation(tmp_path: Path) -> None:
    spec = {"delimiter": ";", "header": True, "label": "y",
            "columns": [{"name": "u", "type": "categorical"}, {"name": "y", "type": "label"},
                        {"name": "p", "type": "numeric"}, {"name": "note", "type": "skip"}]}
    schema = csv_schema(spec)
    row = P.parse_line(schema, "alice;1;2.5e1;whatever")
    assert row.label == 1.0 and row.numeric == (25.0,) and row.categorical == (b"alice",)
    assert P.parse_line(schema, ";0;;").numeric == (None,)
    assert reason(schema, "a;1;abc;x") == P.NON_NUMERIC
    assert reason(schema, "a;1;1e999;x") == P.NON_NUMERIC
    assert reason(schema, "a;1;nan;x") == P.NON_NUMERIC
    yaml_path = tmp_path / "schema.yaml"
    yaml_path.write_text("label: y\ncolumns:\n  - {name: y}\n  - {name: u, type: categorical}\n")
    assert csv_schema(str(yaml_path)).categorical_fields == ("u",)
    bad = [
        ({**spec, "delimeter": ","}, "delimeter"),
        ({**spec, "label": "nope"}, "schema.label"),
        ({**spec, "columns": [{"name": "y", "typ": "label"}]}, "schema.columns[0]"),
        ({**spec, "columns": [{"name": "y"}, {"name": "u", "type": "text"}]}, "schema.columns[1].type"),
        ({**spec, "columns": [{"name": "y"}, {"name": "y"}]}, "duplicate"),
        ({**spec, "delimiter": ",,"}, "schema.delimiter"),
        ({**spec, "header": "yes"}, "schema.header"),
    ]
    for s, needle in bad:
        with pytest.raises(SchemaError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            csv_schema(s)
    with pytest.raises(SchemaError, match="not found"):
        csv_schema(str(tmp_path / "missing.yaml"))


def _ruled(label: object) -> object:
    return csv_schema({"label": label, "columns": [{"name": "u"}, {"name": "r", "type": "label"}]})


@pytest.mark.parametrize(("rule", "values"), [
    (">= 4", {"4": 1.0, "4.0": 1.0, "5": 1.0, "3.5": 0.0, "-1": 0.0, "1e1": 1.0}),
    ("> 4", {"4": 0.0, "4.01": 1.0}),
    ("<=0.5", {"0.5": 1.0, ".6": 0.0}),
    ("< 0", {"-0.1": 1.0, "0": 0.0}),
    ("== 1", {"1.0": 1.0, "2": 0.0}),
    ("!= 0", {"0": 0.0, "7": 1.0}),
])
def test_threshold_label_rule(rule: str, values: dict[str, float]) -> None:
    schema = _ruled({"column": "r", "rule": rule})
    for raw, label in values.items():
        assert P.parse_line(schema, f"alice,{raw}").label == label, (rule, raw)
    for raw in ("", "four", "nan", "1e999", "4 "):
        assert reason(schema, f"alice,{raw}") == P.LABEL_NOT_NUMBER, raw


def test_value_map_label_rule() -> None:
    schema = _ruled({"column": "r", "map": {"yes": 1, "no": 0, 5: 1}})
    assert [P.parse_line(schema, f"a,{v}").label for v in ("yes", "no", "5")] == [1.0, 0.0, 1.0]
    for raw in ("Yes", "", "maybe", "1", "no "):
        assert reason(schema, f"a,{raw}") == P.LABEL_NOT_IN_MAP, raw
    assert _ruled("r").label_rule is None and P.parse_line(_ruled("r"), "a,1").label == 1.0
    assert P.parse_line(schema.without_label(), "a").categorical == (b"a",)  # unlabelled scoring input


@pytest.mark.parametrize(("label", "message"), [
    ({"column": "r", "rule": "=> 4"}, r"^schema\.label\.rule: expected '<op> <number>'"),
    ({"column": "r", "rule": 4}, r"^schema\.label\.rule: "),
    ({"column": "r", "rule": ">= four"}, r"^schema\.label\.rule: "),
    ({"column": "r"}, r"^schema\.label: give exactly one of rule"),
    ({"column": "r", "rule": ">= 4", "map": {"a": 1, "b": 0}}, r"^schema\.label: give exactly one"),
    ({"column": "r", "rules": ">= 4"}, r"^schema\.label: unknown key\(s\) \['rules'\]"),
    ({"rule": ">= 4"}, r"^schema\.label\.column: expected the label column's name, got None"),
    ({"column": "nope", "rule": ">= 4"}, r"^schema\.columns\[1\]\.type: 'label' but schema\.label is 'nope'"),
    ({"column": "r", "map": {True: 1, False: 0}}, r"^schema\.label\.map: key True is not a string .*quote"),
    ({"column": "r", "map": {"y": 2, "n": 0}}, r"^schema\.label\.map\.y: expected 0 or 1, got 2"),
    ({"column": "r", "map": {"y": 1, "z": 1}}, r"^schema\.label\.map: needs values labelled 1 and values labelled 0"),
    ({"column": "r", "map": {1: 1, "1": 0}}, r"^schema\.label\.map: value '1' given twice"),
    ({"column": "r", "map": []}, r"^schema\.label\.map: expected a mapping"),
])
def test_label_rule_errors_name_the_key(label: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as err:
        _ruled(label)
    assert "\n" not in str(err.value)


def test_scoring_input_header_is_matched_by_name() -> None:
    """At predict time a header reorders the columns, with or without the label column; a mismatch is named."""
    schema = csv_schema({"header": True, "label": "y", "columns": [
        {"name": "id", "type": "skip"}, {"name": "u", "type": "categorical"}, {"name": "y", "type": "label"},
        {"name": "p", "type": "numeric"}]})
    labelled = rawinput.input_schema(schema, b"2.5,1,alice,7\n", "auto", b"p,y,u,id\r\n")
    row = P.parse_line(labelled, b"2.5,1,alice,7\n")
    assert (row.label, row.numeric, row.categorical) == (1.0, (2.5,), (b"alice",))
    unlabelled = rawinput.input_schema(schema, b"2.5,alice,7\n", "auto", b"p,u,id\n")
    assert P.parse_line(unlabelled, b"2.5,alice,7").categorical == (b"alice",)
    assert rawinput.column_index(unlabelled, "id") == 2
    assert rawinput.id_values([b"2.5,alice,7\n"], unlabelled, 2) == ["7"]
    with pytest.raises(rawinput.RawInputError, match=r"missing \['u'\]; unexpected \['user'\]"):
        rawinput.input_schema(schema, b"2.5,alice,7\n", "auto", b"p,user,id\n")
    with pytest.raises(rawinput.RawInputError, match=r"missing \['y'\]"):
        rawinput.input_schema(schema, b"2.5,alice,7\n", "yes", b"p,u,id\n")
    with pytest.raises(SchemaError):
        schema_for("csv")


def _reference(schema, buf: bytes) -> P.ParsedChunk:
    lines = buf.split(b"\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    ok, rows, rejected = P._parse_rows(schema, lines, list(range(len(lines))))
    idx, labels, numeric, cats = P._rows_to_columns(schema, ok, rows)
    starts = np.concatenate([[0], np.cumsum([len(x) + 1 for x in lines])[:-1]]).astype(np.int64)
    return P.ParsedChunk(len(lines), idx, labels, numeric, cats, rejected, starts[:len(lines)])


def assert_chunks_equal(a: P.ParsedChunk, b: P.ParsedChunk) -> None:
    assert a.n_lines == b.n_lines
    assert a.rejected == b.rejected
    np.testing.assert_array_equal(a.line_start, b.line_start)
    np.testing.assert_array_equal(a.ok_idx, b.ok_idx)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    assert len(a.categorical) == len(b.categorical)
    for x, y in zip(a.categorical, b.categorical, strict=True):
        np.testing.assert_array_equal(P.keys_as_bytes(x), P.keys_as_bytes(y))


def test_chunk_parser_matches_row_parser_on_real_heads(shared_data: Path) -> None:
    buf = (shared_data / "criteo_kaggle_head10k" / "sample.train").read_bytes()[:400_000]
    buf = buf[:buf.rindex(b"\n") + 1]
    pc = P.parse_chunk(CRITEO, buf)
    assert len(pc.ok_idx) == pc.n_lines > 1000
    assert_chunks_equal(pc, _reference(CRITEO, buf))
    abuf = (shared_data / "avazu_kaggle_head10k" / "test").read_bytes()
    apc = P.parse_chunk(AVAZU, abuf)
    assert len(apc.ok_idx) == apc.n_lines == 1000
    assert_chunks_equal(apc, _reference(AVAZU, abuf))


def test_chunk_parser_mixed_good_bad_and_unusual_rows() -> None:
    lines = [
        criteo_line(),
        "",
        criteo_line(ints=["123456789012"] + [""] * 12),  # valid, longer than the fast path's 8 chars
        criteo_line(label="x"),
        criteo_line(cats=["ABCDEF"] + [""] * 25),
        criteo_line(ints=["-"] + ["1"] * 12),
        criteo_line() + "\x00",
        "0\t" + "\t".join([""] * 39),
        criteo_line(ints=["99999999"] * 13) + "\r",
    ]
    buf = ("\n".join(lines)).encode()  # no final newline
    pc = P.parse_chunk(CRITEO, buf)
    assert_chunks_equal(pc, _reference(CRITEO, buf))
    assert [r for _, r, _ in pc.rejected] == [P.BLANK, P.BAD_LABEL, P.NON_INT, P.NUL_BYTE]
    alines = [AVAZU_LINE, AVAZU_LINE.replace("1fbe01fe", "a-very-long-site-id"), AVAZU_LINE.replace("14102100", "1"),
              AVAZU_LINE.replace("1fbe01fe", "")]
    abuf = "\n".join(alines).encode() + b"\n"
    apc = P.parse_chunk(AVAZU, abuf)
    assert_chunks_equal(apc, _reference(AVAZU, abuf))
    last_cr = AVAZU_LINE.encode()[:-2] + b"\r"  # final line without newline, ending in an empty field + CR
    assert_chunks_equal(P.parse_chunk(AVAZU, last_cr), _reference(AVAZU, last_cr))
    assert apc.categorical[AVAZU.categorical_fields.index("site_id")].dtype.kind == "S"
    assert len(apc.ok_idx) == 3


def test_libfm_chunk_fast_and_slow_rows_agree(shared_data: Path) -> None:
    schema = libfm_schema(10)
    buf = (shared_data / "frappe_nfm" / "frappe.validation.libfm").read_bytes()[:200_000]
    buf = buf[:buf.rindex(b"\n") + 1]
    odd = [b"1  266:1 1244:1 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1 5149:1",  # double space: slow, valid
           b"-1\t138:1 1296:1 5041:1 5052:1 5053:1 5055:1 5058:1 5061:1 5085:1 5201:1 ",  # tab + trailing space
           b"0 123456789:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1 9:1 10:1",  # long id: slow, valid
           b"1 1:1 2:1 3 4:1 5:1 6:1 7:1 8:1 9:1 10:1",  # no colon
           b"1 1:1 :1 3:1 4:1 5:1 6:1 7:1 8:1 9:1 10:1"]  # empty id
    buf += b"\n".join(odd) + b"\n"
    pc = P.parse_chunk(schema, buf)
    assert_chunks_equal(pc, _reference(schema, buf))
    assert [r for _, r, _ in pc.rejected] == [P.BAD_ITEM, P.BAD_ITEM]
    assert pc.categorical[0].dtype.kind == "S" and pc.categorical[1].dtype == np.uint64  # f1 has a 9-byte id
