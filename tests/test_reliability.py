"""Faults in runs: a killed rank under torchrun, a save interrupted mid-write, non-finite loss, bad data, a failing
rank (bad configs and CLI errors: test_reliability_errors.py). What the user sees is in docs/reliability.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlf_torchrec.config import load_config
from dlf_torchrec.data.loader import rank_indices
from dlf_torchrec.data.meta import DatasetMeta
from dlf_torchrec.data.preprocess import ensure_preprocessed
from dlf_torchrec.run import build_unsharded
from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.runlock import LOCK_FILE, RunDirLocked, RunLock

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "configs" / "synthetic" / "dcnv2.yaml")
ROWS, BATCH, SEED = 6000, 256, 2019
SMALL = [f"dataset.synthetic_rows={ROWS}", f"training.batch_size={BATCH}", "training.epochs=2",
         "model.hidden_units=[32,32]", "features.embedding_dim=8", "training.progress=false",
         "dataset.progress=false", "training.num_workers=1", "training.early_stop_patience=5"]
# torchrun's default shared rendezvous store: restarts work because init_distributed prefixes the store per attempt.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """The small synthetic dataset, preprocessed once for the module (the runs find it ready)."""
    out = str(tmp_path_factory.mktemp("reliability") / "data")
    ensure_preprocessed(load_config(CONFIG, [*SMALL, f"dataset.output_dir={out}"]).dataset)
    return out


def _args(data: str, run: Path, *extra: str) -> list[str]:
    return ["--config", CONFIG, *SMALL, f"dataset.output_dir={data}", f"training.output_dir={run}", *extra]


def _torchrun(nproc: int, max_restarts: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            f"--max-restarts={max_restarts}", "--monitor-interval=0.5"]


def _events(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    # Only whole lines: rank 0 may be appending one while the test polls.
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def _children(pid: int) -> dict[int, int]:
    """{descendant pid: parent pid} of ``pid``, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out[child] = parent
                frontier.append(child)
    return out


def _env_of(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)


def _worker(agent_pid: int, local_rank: int) -> int | None:
    """The torchrun worker process of ``local_rank`` (not its data-loader children, which inherit its env)."""
    tree = _children(agent_pid)
    ranked = {p for p in tree if _env_of(p).get("LOCAL_RANK") == str(local_rank)}
    top = [p for p in ranked if tree[p] not in ranked]
    return top[0] if top else None


def _wait(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"job still running after {timeout}s (hang?):\n{log.read_text()[-4000:]}")


def _popen(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env or ENV, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


# --------------------------------------------------------------------------------------------- 1. killed rank


def test_sigkilled_rank_restarts_and_resumes_exactly(data_dir: str, tmp_path: Path) -> None:
    """SIGKILL rank 1 mid-epoch; torchrun restarts both workers, they resume from the newest complete checkpoint
    and end with exactly the metrics of an uninterrupted run (per-rank RNG, dropout, BatchNorm stats, Adam state,
    lrs, mid-epoch data position all restored)."""
    extra = ["training.checkpoint_every_steps=4", "model.dropout=0.1", "training.evaluate_test=false"]
    ref_run, run = tmp_path / "reference", tmp_path / "killed"
    ref = _popen([*_torchrun(2, 0), "-m", "dlf_torchrec.train", *_args(data_dir, ref_run, *extra)],
                 tmp_path / "reference.log")
    assert _wait(ref, 300, tmp_path / "reference.log") == 0, (tmp_path / "reference.log").read_text()[-4000:]

    log = tmp_path / "killed.log"
    proc = _popen([*_torchrun(2, 1), "-m", "dlf_torchrec.train", *_args(data_dir, run, *extra)], log)
    killed, deadline = None, time.time() + 240
    while killed is None and time.time() < deadline and proc.poll() is None:
        if any(e["event"] == "checkpoint" and e["epoch"] == 0 for e in _events(run)):
            killed = _worker(proc.pid, 1)
            if killed is not None:
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, f"never saw a mid-epoch checkpoint with a live rank 1:\n{log.read_text()[-4000:]}"
    assert _wait(proc, 300, log) == 0, log.read_text()[-4000:]

    events = _events(run)
    resumes = [e for e in events if e["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["epoch"] == 0 and resumes[0]["step"] > 0, resumes
    expected = json.loads((ref_run / "results.json").read_text())
    assert json.loads((run / "results.json").read_text()) == expected  # exact, not approximate
    # Same per-epoch validation metrics too (the eval before and after the restart).
    evals = [{k: v for k, v in e.items() if k != "time"} for e in events if e["event"] == "eval"]
    ref_evals = [{k: v for k, v in e.items() if k != "time"} for e in _events(ref_run) if e["event"] == "eval"]
    assert evals == ref_evals


# --------------------------------------------------------------------------------------------- 2. interrupted save


SLOW_SAVE = """
import sys, time
from dlf_torchrec.training import checkpoint
publish = checkpoint._publish
def slow_publish(*args, **kwargs):  # shards written, rename not yet done: the test kills the job here
    time.sleep(2)
    return publish(*args, **kwargs)
checkpoint._publish = slow_publish
from dlf_torchrec.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(data_dir: str, tmp_path: Path) -> None:
    """SIGKILL while a save exists only as ``<name>.partial``: the previous checkpoint loads, the rerun resumes from
    it, and the leftover ``.partial`` is removed by the next successful save."""
    run, log = tmp_path / "run", tmp_path / "train.log"
    ckdir = run / "checkpoints"
    args = _args(data_dir, run, "training.checkpoint_every_steps=4", "training.epochs=1",
                 "training.evaluate_test=false")
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    proc = _popen([sys.executable, str(script), *args], log)
    partial, deadline = None, time.time() + 180
    while partial is None and time.time() < deadline and proc.poll() is None:
        done = ckpt.periodic_checkpoints(str(ckdir))
        for p in sorted(ckdir.glob("step_*.partial")) if done else []:
            if any(p.glob("rng_rank*")):  # the shards are written; the rename has not happened
                partial = p
        time.sleep(0.05)
    assert partial is not None, log.read_text()[-4000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists()
    previous = ckpt.periodic_checkpoints(str(ckdir))
    assert previous and all(not p.endswith(".partial") for p in previous)
    assert int(previous[-1].rsplit("_", 1)[1]) < int(partial.name.split("_")[1].split(".")[0])
    # The previous checkpoint is complete and loads (here: exported to the unsharded model).
    cfg = load_config(CONFIG, args[2:])
    model = build_unsharded(cfg, DatasetMeta.load(data_dir).feature_spec)
    state = ckpt.load_unsharded(previous[-1], model).state_dict()
    assert state and all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point())

    rerun = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", *args], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    resumes = [e for e in _events(run) if e["event"] == "resume"]
    assert [r["path"] for r in resumes] == [previous[-1]]
    assert not list(ckdir.glob("*.partial")) and (run / "results.json").exists()


# --------------------------------------------------------------------------------------------- 4. guards


def test_rerun_of_finished_run_trains_nothing_and_keeps_results(data_dir: str, tmp_path: Path) -> None:
    """The same command again (here under another plan) once every epoch is done: no step, no evaluation, and the
    first run's results.json stays as it was (it used to be re-evaluated and overwritten)."""
    run = tmp_path / "run"
    args = _args(data_dir, run, "training.epochs=1", "training.evaluate_test=false")
    train = [sys.executable, "-m", "dlf_torchrec.train", *args]
    first = subprocess.run(train, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    results = run / "results.json"
    before, mtime, events = results.read_bytes(), results.stat().st_mtime_ns, len(_events(run))
    again = subprocess.run([*train, "sharding.type=row_wise"], cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stdout and "kept its results.json" in again.stdout, again.stdout[-3000:]
    assert results.read_bytes() == before and results.stat().st_mtime_ns == mtime
    assert [e["event"] for e in _events(run)[events:]] == ["resume"]


def test_resume_under_another_config_is_refused_naming_the_keys(data_dir: str, tmp_path: Path) -> None:
    """A checkpointed run continued with a changed model or optimiser key exits 2 with one line naming the key (it
    used to load the checkpoint into whatever the new config built); keys a resume may change (epochs, sharding)
    pass; ``training.force_resume=true`` continues anyway."""
    run = tmp_path / "run"
    train = [sys.executable, "-m", "dlf_torchrec.train", *_args(data_dir, run, "training.epochs=1",
                                                                    "training.evaluate_test=false")]
    first = subprocess.run(train, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    results = run / "results.json"
    before, events = results.read_bytes(), len(_events(run))
    changed = subprocess.run([*train, "model.dropout=0.5", "optimizer.dense.lr=0.01"], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2, changed.stderr[-3000:]
    lines = [line for line in changed.stderr.splitlines() if line.strip()]
    assert "Traceback" not in changed.stderr
    assert lines[-1].startswith(f"train: error: config error: {run} holds a run with another config or data ("), lines
    assert "model.dropout 0.2 -> 0.5" in lines[-1] and "optimizer.dense.lr 0.001 -> 0.01" in lines[-1]
    assert "training.force_resume=true" in lines[-1]
    assert results.read_bytes() == before and len(_events(run)) == events  # nothing loaded, trained or written
    allowed = subprocess.run([*train, "sharding.type=row_wise", "training.progress=true"], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0 and "nothing to train" in allowed.stdout, allowed.stderr[-3000:]
    forced = subprocess.run([*train, "model.dropout=0.5", "training.force_resume=true"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert forced.returncode == 0 and "nothing to train" in forced.stdout, forced.stderr[-3000:]
    recorded = json.loads((run / "run_fingerprint.json").read_text())
    assert recorded["model.dropout"] == 0.5 and recorded["data.train.rows"] > 0  # the forced run is the run now


def test_second_run_into_a_locked_output_dir_fails_in_one_line(data_dir: str, tmp_path: Path) -> None:
    """While a run holds ``<output_dir>/run.lock`` (here: this test process), a second training into the same
    directory exits 1 with one line naming the holder, before writing anything there."""
    run = tmp_path / "run"
    with RunLock(str(run)):
        proc = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", *_args(data_dir, run)], cwd=REPO, env=ENV,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"train: error: {run} is in use by another run (pid {os.getpid()} on host "), lines
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(run)) == []  # the lock file went with its holder; nothing else was written


def test_run_lock_reports_and_takes_over_a_stale_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": 0}))
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert f"stale lock {tmp_path / LOCK_FILE} from a run that is no longer running (pid {dead.pid}" \
        in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(RunDirLocked, match=f"pid {os.getpid()} on host"):
        RunLock(str(tmp_path)).acquire()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(str(tmp_path)):  # free again
        pass


def test_one_class_validation_split_fails_before_training_in_one_line(tmp_path: Path) -> None:
    line = "\t".join(["{}", *["1"] * 13, *["0000000a"] * 26])
    train, valid = tmp_path / "train.tsv", tmp_path / "valid.tsv"
    train.write_text("".join(line.format(i % 2) + "\n" for i in range(40)))
    valid.write_text("".join(line.format(0) + "\n" for _ in range(8)))
    args = _args(str(tmp_path / "data"), tmp_path / "run", "dataset.format=criteo", f"dataset.train={train}",
                 f"dataset.valid={valid}")
    proc = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"train: error: {valid}: the validation split has one class "
                                                    f"only (8 rows, all label 0): AUC is undefined; use more rows "
                                                    f"or another split")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_non_finite_loss_stops_with_step_and_keeps_checkpoints(data_dir: str, tmp_path: Path) -> None:
    """A NaN label in the 11th batch of epoch 0: the run stops at that step with a non-zero exit naming it, and
    ``best`` (from the evaluation at step 4) plus the periodic checkpoints written before it still load and hold
    finite weights."""
    poisoned = tmp_path / "data"
    shutil.copytree(data_dir, poisoned)
    n = DatasetMeta.load(str(poisoned)).splits["train"].rows
    batch_index = 10  # -> global step 11
    row = rank_indices(n, 0, 1, for_eval=False, shuffle=True, seed=SEED, epoch=0)[batch_index * BATCH]
    labels = np.memmap(poisoned / "train" / "labels.bin", dtype="<f4", mode="r+", shape=(n,))
    labels[row] = np.nan
    labels.flush()
    del labels
    run = tmp_path / "run"
    args = _args(str(poisoned), run, "training.checkpoint_every_steps=5", "training.eval_every_steps=4",
                 "training.evaluate_test=false")
    proc = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    bad_step = batch_index + 1
    assert proc.returncode != 0
    assert re.search(rf"non-finite loss nan at step {bad_step}\b", proc.stderr), proc.stderr[-3000:]
    ckdir = run / "checkpoints"
    kept = ckpt.periodic_checkpoints(str(ckdir))
    assert [int(p.rsplit("_", 1)[1]) for p in kept] == [5, 10], kept
    cfg = load_config(CONFIG, args[2:])
    meta = DatasetMeta.load(str(poisoned))
    for path in [*kept, str(ckdir / "best")]:
        state = ckpt.load_unsharded(path, build_unsharded(cfg, meta.feature_spec)).state_dict()
        assert all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point()), path
    assert not (run / "results.json").exists()


@pytest.mark.parametrize(("override", "named"), [
    ("training.bogus=1", "training.bogus"),
    ("training.batch_size=big", "training.batch_size"),
    ("model.hidden_units=[32,-1]", "model.hidden_units"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, override: str, named: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "dlf_torchrec.train", *_args(str(tmp_path / "d"), tmp_path / "r"),
                           override], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "config error" in proc.stderr and named in proc.stderr, proc.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()  # nothing started


def test_missing_data_file_fails_fast_with_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "train.txt"
    start = time.time()
    proc = subprocess.run([*_torchrun(2, 0), "-m", "dlf_torchrec.train",
                           *_args(str(tmp_path / "d"), tmp_path / "r", "dataset.format=criteo", "dataset.name=criteo",
                                  f"dataset.train={missing}")],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    # Every rank stops with rank 0's error as it is (not a RuntimeError wrapping it).
    line = f"train: error: dataset.train: input file not found: {missing}"
    assert proc.stderr.count(line) == 2, (proc.stdout + proc.stderr)[-3000:]
    assert time.time() - start < 180
    assert not (tmp_path / "r" / "checkpoints").exists()


FAIL_RANK_1 = """
import os, sys
from dlf_torchrec.training import loop
if os.environ["RANK"] == "1":
    def boom(self):
        raise RuntimeError("injected failure on rank 1 at step %d" % self.state.global_step)
    loop.Trainer._save_periodic = boom
from dlf_torchrec.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_failing_rank_fails_the_job_without_hanging(data_dir: str, tmp_path: Path) -> None:
    """Rank 1 raises at its first periodic checkpoint while rank 0 waits in the save's collective: torchrun tears
    the job down (non-zero exit, the error shown) instead of rank 0 hanging until the 30-minute gloo timeout."""
    script = tmp_path / "fail_rank1.py"
    script.write_text(FAIL_RANK_1)
    log = tmp_path / "job.log"
    start = time.time()
    proc = _popen([*_torchrun(2, 0), str(script), *_args(data_dir, tmp_path / "run",
                                                         "training.checkpoint_every_steps=3")], log)
    rc = _wait(proc, 180, log)
    assert rc != 0
    assert "injected failure on rank 1 at step 3" in log.read_text(), log.read_text()[-3000:]
    assert time.time() - start < 180


# --------------------------------------------------------------------------------------------- 5. config fuzz
