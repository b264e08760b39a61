"""Shared fixtures: the real CTR sample files in ``../shared/data`` (never copied into this repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data`` relative to the repo root; fails (not skips) with a clear message if missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data directory not found: {SHARED_DATA} (expected the real CTR samples next to the "
                    f"repository, see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sigterm_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(data dir, run dir): the small synthetic dataset of tests/test_reliability.py and an uninterrupted 2-rank
    torchrun run on it with the settings that tests/test_preemption.py and tests/test_slurm_cluster.py interrupt
    with SIGTERM (once per session: both compare with it)."""
    from test_preemption import EXTRA
    from test_reliability import CONFIG, SMALL, _args, _popen, _torchrun, _wait

    from dlf_torchrec.config import load_config
    from dlf_torchrec.data.preprocess import ensure_preprocessed

    root = tmp_path_factory.mktemp("sigterm_reference")
    data, run, log = str(root / "data"), root / "run", root / "run.log"
    ensure_preprocessed(load_config(CONFIG, [*SMALL, f"dataset.output_dir={data}"]).dataset)
    proc = _popen([*_torchrun(2, 0), "-m", "dlf_torchrec.train", *_args(data, run, *EXTRA)], log)
    assert _wait(proc, 300, log) == 0, log.read_text()[-4000:]
    return data, run
