"""Reliability: bad configs and every CLI's user errors end in one line naming the key, file or line (split out of
test_reliability.py, which covers runs: kills, resumes, locks)."""


from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlf_torchrec import cli
from dlf_torchrec.config import ConfigError, ExperimentConfig, build_config, load_config
from dlf_torchrec.data.preprocess import DataError
from dlf_torchrec.training.runlock import RunDirLocked

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "configs" / "synthetic" / "dcnv2.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


_DEFAULT = load_config(CONFIG).to_dict()  # includes resolved
_SECTIONS = ("dataset", "features", "model", "optimizer", "sharding", "training")
_KEY_NAMED = re.compile(r"\b(dataset|features|model|optimizer|sharding|training)\b|override|top level")

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8), st.sampled_from(["auto", "cpu", "adam", "row_wise", "dense", "csv"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=6)


def _paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in tree.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out.extend(_paths(v, (*prefix, k)))
    return out


_ALL_PATHS = _paths(_DEFAULT)


@st.composite
def _mutated(draw) -> tuple[object, list[str]]:
    if draw(st.integers(0, 19)) == 0:  # sometimes not even a mapping
        return draw(_values), []
    raw = json.loads(json.dumps(_DEFAULT))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_ALL_PATHS))
        node = raw
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        op = draw(st.sampled_from(["set", "delete", "add"]))
        if op == "set":
            node[path[-1]] = draw(_values)
        elif op == "delete":
            node.pop(path[-1], None)
        else:
            node[draw(st.text(min_size=1, max_size=6))] = draw(_values)
    keys = [".".join(p) for p in _ALL_PATHS] + ["x", "training.", ".a", "a..b", "model", "training.seed.x"]
    overrides = [f"{draw(st.sampled_from(keys))}={draw(st.text(max_size=10))}"
                 for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        overrides.append(draw(st.text(max_size=12)))  # arbitrary, possibly without '='
    return raw, overrides


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_mutated())
def test_config_loader_fuzz(case: tuple[object, list[str]]) -> None:
    """Random and mutated YAML mappings plus overrides: a valid ExperimentConfig or a ConfigError naming a key."""
    raw, overrides = case
    try:
        cfg = build_config(raw, "<fuzz>", overrides)  # type: ignore[arg-type]
    except ConfigError as e:  # any other exception type fails the test
        message = str(e).removeprefix("<fuzz>: ")  # every message starts with the source
        assert _KEY_NAMED.search(message) or re.search(r"[\w\]]\.\w|key", message), message
        return
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model_name in str(cfg.to_dict()["model"]["name"])


@pytest.mark.parametrize(("raw", "overrides"), [({"model": 5}, []), ({"model": ["a"]}, []), ({}, ["model=[1]"])])
def test_config_model_section_not_a_mapping(raw: dict, overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match="model"):
        build_config(raw, "<test>", overrides)


# --------------------------------------------------------------------------------------------- 6. one-line errors


def _truncated_gzip(tmp_path: Path) -> tuple[Path, int]:
    """A gzipped Criteo file cut in the middle, and how many bytes of it still decompress."""
    rows = "".join("\t".join([str(i % 2), *["1"] * 13, *["0000000a"] * 26]) + "\n" for i in range(3000)).encode()
    packed = gzip.compress(rows)
    path = tmp_path / "train.txt.gz"
    path.write_bytes(packed[:len(packed) // 2])
    return path, len(zlib.decompressobj(wbits=31).decompress(packed[:len(packed) // 2]))


def _cli(tmp_path: Path, tool: str, *args: str) -> subprocess.CompletedProcess:
    """Run a tool: ``dlf_torchrec.<module>`` with ``-m``, or a ``benchmarks/*.py`` script."""
    cmd = [sys.executable, tool] if tool.endswith(".py") else [sys.executable, "-m", tool]
    return subprocess.run([*cmd, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)


# id: (tool, arguments, exit status, the error line); {tmp} is the test's tmp_path, a trailing ... marks a prefix
CLI_ERRORS = {
    "train_config": ("dlf_torchrec.train", ["--config", CONFIG, "training.bogus=1"], 2,
                     f"train: error: config error: {CONFIG}: unknown key 'training.bogus' ..."),
    "preprocess_truncated_gz": ("dlf_torchrec.data.preprocess", ["--config", "{tmp}/gz.yaml"], 1,
                                "preprocess: error: {tmp}/train.txt.gz: truncated gzip input after {n} bytes of "
                                "decompressed data"),
    "predict_no_run": ("dlf_torchrec.predict", ["--run", "{tmp}/none", "--input", "{tmp}/train.txt.gz", "--output",
                                                "{tmp}/p.txt"], 1,
                       "predict: error: {tmp}/none/config.yaml not found: not a training run directory"),
    "export_no_run": ("dlf_torchrec.export", ["--run", "{tmp}/none", "--out", "{tmp}/m.pt2"], 1,
                      "export: error: {tmp}/none/config.yaml not found: not a training run directory"),
    "synthetic_unwritable": ("dlf_torchrec.data.synthetic", ["--out", "{tmp}/train.txt.gz/d/x.tsv", "--rows", "10"], 1,
                             "synthetic: error: [Errno 20] Not a directory: '{tmp}/train.txt.gz/d'"),
    "synthetic_rows": ("dlf_torchrec.data.synthetic", ["--out", "{tmp}/x.tsv", "--rows", "0"], 2,
                       "synthetic: error: --rows must be >= 1"),
    "throughput_option": ("benchmarks/throughput.py", ["--windows", "x"], 2,
                          "benchmarks/throughput: error: argument --windows: invalid int value: 'x'"),
    "quality_option": ("benchmarks/quality.py", ["--suite", "x"], 2,
                       "benchmarks/quality: error: argument --suite: invalid choice: 'x' ..."),
    "allocator_option": ("benchmarks/allocator.py", ["--quick", "extra"], 2,
                         "benchmarks/allocator: error: unrecognized arguments: extra"),
    "flops_option": ("benchmarks/flops.py", ["--batch"], 2,
                     "benchmarks/flops: error: argument --batch: expected one argument"),
    "preprocess_benchmark_option": ("benchmarks/preprocess.py", ["--rows", "1e5"], 2,
                                    "benchmarks/preprocess: error: argument --rows: invalid int value: '1e5'"),
    "reference_not_fuxictr": ("benchmarks/reference.py", ["--fuxictr-src", "{tmp}"], 2,
                              "benchmarks/reference: error: {tmp}: no model_zoo/DCNv2/src (not a reczoo/FuxiCTR "
                              "checkout?)"),
}


@pytest.mark.parametrize("case", list(CLI_ERRORS))
def test_every_cli_reports_a_user_error_in_one_line(tmp_path: Path, case: str) -> None:
    """Each tool, given a bad option, config or input, prints exactly one stderr line ``<tool>: error: <message>``
    and no traceback; exit status 2 for usage and config errors, 1 for data and run errors."""
    tool, args, status, expected = CLI_ERRORS[case]
    gz, n = _truncated_gzip(tmp_path)
    (tmp_path / "gz.yaml").write_text(f"dataset:\n  format: criteo\n  train: {gz}\n  output_dir: {tmp_path / 'o'}\n")
    proc = _cli(tmp_path, tool, *(a.format(tmp=tmp_path) for a in args))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == status and len(lines) == 1, proc.stderr[-3000:]
    expected = expected.format(tmp=tmp_path, n=n)
    prefix = expected.removesuffix("...")
    assert lines[0] == expected or (prefix != expected and lines[0].startswith(prefix)), lines[0]
    assert not (tmp_path / "o" / "meta.json").exists()


def test_cli_debug_shows_the_traceback(tmp_path: Path) -> None:
    gz, n = _truncated_gzip(tmp_path)
    (tmp_path / "gz.yaml").write_text(f"dataset:\n  format: criteo\n  train: {gz}\n  output_dir: {tmp_path / 'o'}\n")
    proc = _cli(tmp_path, "dlf_torchrec.data.preprocess", "--config", str(tmp_path / "gz.yaml"), "--debug")
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr, proc.stderr[-3000:]
    assert "EOFError: Compressed file ended before the end-of-stream marker was reached" in proc.stderr
    assert proc.stderr.splitlines()[-1] == (f"dlf_torchrec.data.reading.DataError: {gz}: truncated gzip input after "
                                            f"{n} bytes of decompressed data")


@pytest.mark.parametrize(("error", "status", "line"), [
    (ConfigError("a.yaml: bad key"), 2, "tool: error: config error: a.yaml: bad key"),
    (cli.UsageError("--rows must be >= 1"), 2, "tool: error: --rows must be >= 1"),
    (DataError("f.txt: no data rows"), 1, "tool: error: f.txt: no data rows"),
    (RunDirLocked("runs/x is in use"), 1, "tool: error: runs/x is in use"),
    (FileNotFoundError(2, "No such file or directory", "f.txt"), 1,
     "tool: error: [Errno 2] No such file or directory: 'f.txt'"),
    (KeyError("x"), 1, "tool: error: KeyError: 'x' (run with --debug for the traceback)"),
    (RuntimeError("first\n  second"), 1,
     "tool: error: RuntimeError: first second (run with --debug for the traceback)"),
])
def test_cli_run_maps_errors_to_one_line_and_exit_status(error: Exception, status: int, line: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    def fail() -> int:
        raise error

    assert cli.run("tool", fail, False) == status
    assert capsys.readouterr().err == line + "\n"
    with pytest.raises(type(error)):
        cli.run("tool", fail, True)


def test_fingerprint_key_added_by_an_upgrade_at_its_default_is_no_difference() -> None:
    """A run recorded before a config key existed ran as that key's default: resuming it is not refused, unless
    the new value differs from the default (or a recorded key disappears or changes)."""
    from dlf_torchrec.training.runfingerprint import default_fingerprint, differences

    defaults = default_fingerprint("dcnv2")
    new = {"model.name": "dcnv2", "dataset.side_tables": [], "training.batch_size": 512}
    assert differences({"model.name": "dcnv2", "training.batch_size": 512}, new, defaults) == []
    assert differences({"model.name": "dcnv2", "training.batch_size": 512},
                       {**new, "dataset.side_tables": [{"file": "u.csv"}]}, defaults) != []
    assert differences({"model.name": "dcnv2", "training.batch_size": 256}, new, defaults) != []
    assert differences({"model.name": "dcnv2", "training.batch_size": 512, "x.old": 1}, new, defaults) != []
    assert differences({"model.name": "dcnv2", "training.batch_size": 512}, new) != []  # no defaults: strict
