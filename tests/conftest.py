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
