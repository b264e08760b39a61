"""Runs on an object store: the preprocessed dataset and ``training.output_dir`` as ``s3://`` URIs, against a local
S3 server (moto in server mode on 127.0.0.1) started by the test. Preprocess to the bucket, train into it, SIGKILL
the trainer after its first checkpoint, resume from the bucket with the same command, and score from the bucket:
metrics equal an uninterrupted local run's, scores equal a local copy's. docs/launching.md#object-storage."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_reliability import ENV, _popen, _wait

from dlf_torchrec import io, predict
from dlf_torchrec.data import preprocess
from dlf_torchrec.data.synthetic import generate_criteo_tsv
from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.checkpoint import POINTER

moto_server = pytest.importorskip("moto.server")

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "configs" / "synthetic" / "dcnv2.yaml")
BUCKET = "dlf-runs"
# The synthetic teacher's rows read as plain Criteo (no oracle report, so no LR baseline trained per run).
SMALL = ["dataset.format=criteo", "training.batch_size=128", "training.epochs=2", "model.hidden_units=[32,32]",
         "features.embedding_dim=8", "training.progress=false", "dataset.progress=false", "training.num_workers=1",
         "training.early_stop_patience=5", "training.checkpoint_every_steps=4", "model.dropout=0.1",
         "training.evaluate_test=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free local port with bucket ``BUCKET``; yields the environment that points the
    standard AWS variables (fake credentials) at it, set in this process too."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           io.CACHE_ENV: str(tmp_path_factory.mktemp("cache"))}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        fs, _ = io._fs(f"s3://{BUCKET}")
        fs.mkdir(BUCKET)
        yield env
    server.stop()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> str:
    return generate_criteo_tsv(tmp_path_factory.mktemp("raw") / "train.tsv", 6000, 7)


def _train_cmd(raw: str, data: str, run: str) -> list[str]:
    return [sys.executable, "-m", "dlf_torchrec.train", "--config", CONFIG, *SMALL, f"dataset.train={raw}",
            f"dataset.output_dir={data}", f"training.output_dir={run}"]


def _events(run: str) -> list[dict]:
    try:
        text = io.read_text(f"{run}/metrics.jsonl")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _evals(run: str) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "time"} for e in _events(run) if e["event"] == "eval"]


def _local_copy(run: str, dest: Path) -> Path:
    """Download run ``run`` into the local layout: the version each pointer names becomes ``checkpoints/<name>``."""
    fs, root = io._fs(run)
    for name in fs.find(root):
        rel = name[len(root) + 1:]
        if not rel.startswith("checkpoints/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(name, str(dest / rel))
    for name in io.listdir(f"{run}/checkpoints"):
        if name.endswith(POINTER):
            logical = name[:-len(POINTER)]
            version = io.read_text(f"{run}/checkpoints/{name}").strip()
            fs.get(f"{root}/checkpoints/{version}/", str(dest / "checkpoints" / logical) + "/", recursive=True)
    return dest


def test_train_kill_resume_predict_through_s3(s3_env: dict[str, str], raw: str, tmp_path: Path) -> None:
    env = {**ENV, **s3_env}
    data, run = f"s3://{BUCKET}/data/tiny", f"s3://{BUCKET}/runs/tiny"
    # Preprocess to the bucket (staged locally, meta.json uploaded last); the local copy equals a local preprocess.
    assert preprocess.main(["--config", CONFIG, *SMALL, f"dataset.train={raw}", f"dataset.output_dir={data}"]) == 0
    assert io.exists(f"{data}/meta.json") and io.exists(f"{data}/train/sparse.bin")
    local_data = tmp_path / "data"
    assert preprocess.main(["--config", CONFIG, *SMALL, f"dataset.train={raw}",
                            f"dataset.output_dir={local_data}"]) == 0
    staged = Path(io.stage_dir(data, "meta.json"))
    for split in ("train", "valid", "test"):
        for f in (local_data / split).iterdir():
            assert (staged / split / f.name).read_bytes() == f.read_bytes(), f

    # The uninterrupted local reference (same data), beside the bucket's runs.
    ref, ref_log = tmp_path / "reference", tmp_path / "reference.log"
    ref_proc = _popen(_train_cmd(raw, str(local_data), str(ref)), ref_log, env)

    # Into the bucket; SIGKILL once the first periodic checkpoint is there (mid epoch 0).
    log = tmp_path / "killed.log"
    proc = _popen(_train_cmd(raw, data, run), log, env)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not ckpt.periodic_checkpoints(f"{run}/checkpoints"):
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it was killed:\n{log.read_text()[-4000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not io.exists(f"{run}/results.json")
    killed_at = ckpt.periodic_checkpoints(f"{run}/checkpoints")
    assert killed_at and ckpt.is_complete(killed_at[-1])

    # The same command again resumes from the bucket and ends exactly as the uninterrupted run.
    log = tmp_path / "resumed.log"
    proc = _popen(_train_cmd(raw, data, run), log, env)
    assert _wait(proc, 300, log) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert f"resumed from {run}/checkpoints/step_" in text, text[-4000:]
    assert "run lock of s3://" in text and "testing" not in text  # the lock is host-local; no secret printed
    assert _wait(ref_proc, 300, ref_log) == 0, ref_log.read_text()[-4000:]
    assert io.read_json(f"{run}/results.json") == json.loads((ref / "results.json").read_text())
    assert _evals(run) == [{k: v for k, v in e.items() if k != "time"}
                           for e in map(json.loads, (ref / "metrics.jsonl").read_text().splitlines())
                           if e["event"] == "eval"]
    for name in ("config.yaml", "plan.json", "run_fingerprint.json", "curves.png"):
        assert io.exists(f"{run}/{name}"), name
    assert any(n.startswith("events.out.tfevents") for n in io.listdir(run))
    # Only pointed-to versions remain: each pointer names a complete version, nothing else is left.
    names = io.listdir(f"{run}/checkpoints")
    pointers = [n for n in names if n.endswith(POINTER)]
    versions = {io.read_text(f"{run}/checkpoints/{p}").strip() for p in pointers}
    assert set(names) == set(pointers) | versions and "best.pointer" in pointers

    # Scoring from the bucket = scoring a local copy of the run = scoring the local reference run.
    copy = _local_copy(run, tmp_path / "copy")
    outputs = []
    for source, extra in ((run, []), (str(copy), ["--data-dir", str(local_data)]), (str(ref), [])):
        out = tmp_path / f"scores{len(outputs)}.txt"
        assert predict.main(["--run", source, "--input", raw, "--output", str(out), "--no-progress", *extra]) == 0
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0].splitlines()) == 6000


def test_bad_uri_or_missing_bucket_is_one_line_naming_the_path(s3_env: dict[str, str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match="s3://no-such-bucket/run.*bucket 'no-such-bucket' does not exist"):
        io.makedirs("s3://no-such-bucket/run")
    with pytest.raises(io.StorageError, match=r"nope://x/y: unsupported URI"):
        io.read_text("nope://x/y")
    with pytest.raises(io.StorageError, match="credentials in a URI are refused") as e:
        io.exists("s3://AKIA:secret@bucket/x")
    assert "secret" not in str(e.value)
    for argv in (["--run", "s3://no-such-bucket/run"], ["--run", "nope://bucket/run"]):
        assert predict.main([*argv, "--input", "-", "--output", "-"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("predict: error: ") and argv[1] in err, err


def test_save_interrupted_before_the_pointer_flip_keeps_the_previous_checkpoint(
        s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after every shard and trainer_state.json of a new version are written, but before its pointer is
    replaced: the old pointer still names the old, complete version; the next save's prune deletes the orphan."""
    directory = f"s3://{BUCKET}/unit/checkpoints"
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt.save_checkpoint(f"{directory}/best", model, optimizer, {"global_step": 1})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    first = io.read_text(f"{directory}/best{POINTER}")

    write_text = io.write_text

    def crash_at_pointer(path: str, text: str) -> None:
        if path.endswith(POINTER):
            raise RuntimeError("killed before the pointer flip")
        write_text(path, text)

    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(io, "write_text", crash_at_pointer)
    with pytest.raises(RuntimeError, match="pointer flip"):
        ckpt.save_checkpoint(f"{directory}/best", model, optimizer, {"global_step": 2})
    monkeypatch.setattr(io, "write_text", write_text)
    assert io.read_text(f"{directory}/best{POINTER}") == first and len(io.listdir(directory)) == 3  # + orphan

    fresh = torch.nn.Linear(3, 1)
    assert ckpt.load_checkpoint(f"{directory}/best", fresh) == {"global_step": 1}
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())

    ckpt.save_checkpoint(f"{directory}/step_00000003", model, optimizer, {"global_step": 3})
    ckpt.prune_checkpoints(directory, keep_last=1)
    names = io.listdir(directory)
    assert sorted(n for n in names if n.endswith(POINTER)) == ["best.pointer", "step_00000003.pointer"]
    assert len(names) == 4, names  # two pointers, the two versions they name; the orphan is gone
