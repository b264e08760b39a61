"""SIGTERM (preemption) without Slurm: every rank stops after the same step with a checkpoint and exits with 143,
and the job started again (torchrun's restart here, a scheduler's requeue on a cluster) ends with exactly the metrics
of an uninterrupted run. The Slurm version (scancel --signal=TERM, requeue) is in tests/test_slurm_cluster.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_reliability import ENV, _args, _events, _popen, _torchrun, _wait, _worker

from dlf_torchrec.training import checkpoint as ckpt
from dlf_torchrec.training.preemption import EXIT_PREEMPTED, StopRequest
from torchx_components.components import MULTI_NODE_ENV_DEFAULTS  # what our multi-node jobs run with

pytestmark = pytest.mark.slow
EXTRA = ["training.checkpoint_every_steps=4", "model.dropout=0.1", "training.evaluate_test=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evals(run: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "time"} for e in _events(run) if e["event"] == "eval"]


def _signal_after_first_checkpoint(proc: subprocess.Popen, run: Path, log: Path, target: int | None) -> None:
    """SIGTERM the torchrun agent (``target`` None: as Slurm signals a job step) or worker ``target`` once the run
    is past its first periodic checkpoint, mid-epoch."""
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(e["event"] == "checkpoint" and e["epoch"] == 0 for e in _events(run)):
            pid = proc.pid if target is None else _worker(proc.pid, target)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                return
        time.sleep(0.05)
    pytest.fail(f"never saw a mid-epoch checkpoint of a live run:\n{log.read_text()[-4000:]}")


def _assert_resumed_exactly(run: Path, reference: Path) -> None:
    events = _events(run)
    stops = [e for e in events if e["event"] == "preempted"]
    assert len(stops) == 1 and stops[0]["signal"] == signal.SIGTERM, stops
    resumes = [e for e in events if e["event"] == "resume"]
    assert [r["step"] for r in resumes] == [stops[0]["step"]], (stops, resumes)
    assert json.loads((run / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    assert _evals(run) == _evals(reference)


def test_sigterm_to_torchrun_stops_every_rank_with_a_checkpoint(sigterm_reference: tuple[str, Path],
                                                                 tmp_path: Path) -> None:
    """SIGTERM to the torchrun agent (what Slurm does on preemption or scancel --signal=TERM): it forwards the signal
    to its workers (whole process groups, DataLoader workers included), and they write one checkpoint after the same
    step and exit 143. Resuming from such a checkpoint is exact: the next test, and the requeued Slurm job in
    tests/test_slurm_cluster.py."""
    data_dir, _ = sigterm_reference
    run, log = tmp_path / "run", tmp_path / "preempted.log"
    proc = _popen([*_torchrun(2, 0), "-m", "dlf_torchrec.train", *_args(data_dir, run, *EXTRA)], log)
    _signal_after_first_checkpoint(proc, run, log, None)
    assert _wait(proc, 120, log) != 0  # torchrun itself ends with the SignalException of the SIGTERM it got
    text = log.read_text()
    assert text.count("got SIGTERM: stopping after the next step, with a checkpoint") == 2, text[-4000:]
    assert "stopped by SIGTERM after step" in text and "run the same command again" in text, text[-4000:]
    assert "Received 15 death signal, shutting down workers" in text, text[-4000:]
    stops = [e for e in _events(run) if e["event"] == "preempted"]
    assert len(stops) == 1 and stops[0]["signal"] == signal.SIGTERM and stops[0]["epoch"] == 0, stops
    newest = ckpt.periodic_checkpoints(str(run / "checkpoints"))[-1]
    assert newest.endswith(f"step_{stops[0]['step']:08d}") and ckpt.is_complete(newest)
    assert not (run / "results.json").exists()




def _two_agents(data_dir: str, run: Path, tmp_path: Path, max_restarts: int = 1) -> list[subprocess.Popen]:
    """Two torchrun agents (``--nnodes 2``, c10d rendezvous on a free local port, one rank each) training the small
    run into ``run``; their logs are ``tmp_path/node{0,1}.log``."""
    endpoint = f"127.0.0.1:{_free_port()}"
    return [_popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                    "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=two_agents",
                    f"--max-restarts={max_restarts}", "--monitor-interval=0.5", "-m", "dlf_torchrec.train",
                    *_args(data_dir, run, *EXTRA)],
                   tmp_path / f"node{node}.log", env={**ENV, **MULTI_NODE_ENV_DEFAULTS}) for node in (0, 1)]


def test_sigterm_to_one_node_of_two_torchrun_agents_resumes_exactly(sigterm_reference: tuple[str, Path],
                                                                     tmp_path: Path) -> None:
    """Two torchrun agents (``--nnodes 2``, c10d rendezvous, one rank each: a 2-node job on one machine); only the
    second node's worker gets SIGTERM. The per-step all-reduce of the stop flag makes the other rank stop after the
    same step; both exit 143, both agents (--max-restarts 1) rendezvous again, and the restarted ranks resume
    exactly."""
    data_dir, reference = sigterm_reference
    run = tmp_path / "run"
    agents = _two_agents(data_dir, run, tmp_path)
    _signal_after_first_checkpoint(agents[1], run, tmp_path / "node1.log", 0)
    for node, agent in enumerate(agents):
        log = tmp_path / f"node{node}.log"
        assert _wait(agent, 300, log) == 0, log.read_text()[-4000:]
    logs = [(tmp_path / f"node{node}.log").read_text() for node in (0, 1)]
    assert [text.count("got SIGTERM") for text in logs] == [0, 1], [t[-3000:] for t in logs]
    # The node that got no signal stopped too (exit 143), so both agents restarted their workers.
    for text in logs:
        assert f"failed (exitcode: {EXIT_PREEMPTED})" in text, text[-4000:]
    _assert_resumed_exactly(run, reference)


def test_sigkilled_worker_of_one_node_of_two_torchrun_agents_resumes_exactly(sigterm_reference: tuple[str, Path],
                                                                              tmp_path: Path) -> None:
    """Two torchrun agents as above; the second node's worker is SIGKILLed mid-epoch (no checkpoint of its own, no
    goodbye). Its agent restarts it; the other node's worker fails on the broken connection and its agent restarts
    it too (each agent spends a restart, and on a loaded machine a restarted rank can miss the other's round and
    spend another: 3 allowed); they resume from the newest complete checkpoint with exactly the metrics of an
    uninterrupted run."""
    data_dir, reference = sigterm_reference
    run = tmp_path / "run"
    agents = _two_agents(data_dir, run, tmp_path, max_restarts=3)
    killed, deadline = None, time.time() + 240
    while killed is None and time.time() < deadline and agents[1].poll() is None:
        if any(e["event"] == "checkpoint" and e["epoch"] == 0 for e in _events(run)):
            killed = _worker(agents[1].pid, 0)
            if killed is not None:
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, (tmp_path / "node1.log").read_text()[-4000:]
    for node, agent in enumerate(agents):
        log = tmp_path / f"node{node}.log"
        assert _wait(agent, 300, log) == 0, log.read_text()[-4000:]
    assert "exitcode: -9" in (tmp_path / "node1.log").read_text()
    events = _events(run)
    assert not [e for e in events if e["event"] == "preempted"]
    resumes = [e for e in events if e["event"] == "resume"]
    assert resumes and {(r["epoch"], r["step"]) for r in resumes} == {(0, resumes[0]["step"])}, resumes
    assert resumes[0]["step"] > 0
    assert json.loads((run / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    assert _evals(run) == _evals(reference)


def test_sigterm_to_the_process_group_of_a_single_process_run_exits_promptly(sigterm_reference: tuple[str, Path],
                                                                              tmp_path: Path) -> None:
    """One process with a DataLoader worker (no torchrun); SIGTERM to its whole process group (as Slurm signals a
    job step's processes) mid-epoch after the first evaluation. The trainer stops with a checkpoint and must then
    exit 143 at once. Before the train loader was closed on the way out, its worker (SIGTERM blocked, so that it
    serves the last step) outlived the loop, and the interpreter's exit joined it forever after printing "stopped by
    SIGTERM" (seen only when the signal came after an evaluation; signalled in epoch 0 the run exited)."""
    data_dir, _ = sigterm_reference
    run, log = tmp_path / "run", tmp_path / "single.log"
    proc = _popen([sys.executable, "-m", "dlf_torchrec.train", *_args(data_dir, run, *EXTRA)], log)
    deadline = time.time() + 240
    while not any(e["event"] == "checkpoint" and e["epoch"] == 1 for e in _events(run)):  # after an evaluation
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-4000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the trainer and its DataLoader worker
    signalled = time.time()
    assert _wait(proc, 60, log) == EXIT_PREEMPTED, log.read_text()[-4000:]
    assert time.time() - signalled < 30, f"exit took {time.time() - signalled:.0f} s:\n{log.read_text()[-3000:]}"
    assert "stopped by SIGTERM after step" in log.read_text()
    assert len([e for e in _events(run) if e["event"] == "preempted"]) == 1


def test_stop_request_records_the_signal_and_restores_the_handler() -> None:
    """Single process: the handler only records SIGTERM (the process goes on); leaving restores the old handler."""
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest(torch.device("cpu")) as stop:
        assert not stop.agreed()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.agreed() and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_shared_rendezvous_store_is_prefixed_per_attempt_and_multi_node_warns(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Under torchrun's shared store every attempt gets its own key prefix; with several agents (where the per-agent
    restart count cannot name the attempt) rank 0 says how to avoid the hang."""
    import torch.distributed as dist

    from dlf_torchrec.parallel import _per_attempt

    base = dist.HashStore()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    _per_attempt(base).set("k", "v")
    assert base.get("dlf_torchrec/attempt_2/k") == b"v"
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    _per_attempt(base)
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in capsys.readouterr().err
