"""Shared helpers for the benchmarks: a provenance stamp, peak-RSS measurement and result writers (CSV, Markdown, PNG).

Every result file carries the stamp (command line, git commit + dirty flag, UTC time, machine, library versions) so
a number can always be traced back to the code and machine that produced it:

* CSV: ``# key: value`` comment lines before the header (read back with ``read_csv``, which skips them);
* Markdown: an HTML comment block at the top plus a visible "Provenance" section at the bottom;
* PNG: a small footer text under the plot.

Peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the high-water mark of this process. Long-lived benchmark
workers measure several configurations one after the other, so :func:`reset_peak_rss` first resets the kernel's
high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) to the current RSS; :func:`peak_rss_mib` then
reports the peak since the reset. Where the reset is unavailable the figure is the process-lifetime peak (an upper
bound) and :func:`reset_peak_rss` returns False so callers can say so.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import resource
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")


def quiet_torchrec() -> None:
    """Silence the warnings and the planner's log lines that every sharded benchmark step would repeat (planner
    advice, data_parallel "Sharding spec not found" on the root logger)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("torchrec", ""):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------------------------------------- stamp
def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        return "not installed"


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def make_stamp(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Provenance of a benchmark run. Keys are stable; values are strings (for CSV/MD/PNG alike)."""
    argv = list(sys.argv if argv is None else argv)
    commit = _git("rev-parse", "HEAD") or "unknown"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "command": " ".join(shlex.quote(a) for a in ["python", *argv]),
        "git_commit": commit + (" (dirty)" if dirty else ""),
        "utc_time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{os.cpu_count()} cores, {_ram_gib()} GiB RAM, {_cpu_model()}, {platform.system()} "
                   f"{platform.machine()}",
        "load_average_at_start": _load_average(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchrec": _version("torchrec"),
        "fbgemm_gpu": _version("fbgemm_gpu_cpu") if _version("fbgemm_gpu_cpu") != "not installed"
        else _version("fbgemm_gpu"),
    }


def stamp_lines(stamp: dict[str, str]) -> list[str]:
    return [f"{k}: {v}" for k, v in stamp.items()]


# ------------------------------------------------------------------------------------------------------- peak RSS
def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS. False where the kernel does not allow it.

    Freed heap is first handed back to the OS (glibc ``malloc_trim``) so that memory kept from an earlier
    configuration does not count towards the next one's peak.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (since the last :func:`reset_peak_rss`, if it worked)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (2**20 if sys.platform == "darwin" else 1024)


def children_peak_rss_mib() -> float:
    """Largest peak RSS among waited-for child processes (ru_maxrss of RUSAGE_CHILDREN), in MiB."""
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return maxrss / (2**20 if sys.platform == "darwin" else 1024)


# Runs argv[1:] and prints one JSON line: its exit code, wall time, stderr tail, the peak RSS of its process tree
# (RUSAGE_CHILDREN: the largest single process) and the keys of the JSON object the command printed last.
_MEASURED = """
import json, subprocess, sys, time
sys.path.insert(0, {bench!r})
import common
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
out = {{"rc": proc.returncode, "wall_s": time.perf_counter() - t0, "stderr": proc.stderr[-4000:],
        "peak_rss_mib": common.children_peak_rss_mib()}}
try:
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(last if isinstance(last, dict) else {{}})
except (json.JSONDecodeError, IndexError):
    pass
print(json.dumps(out))
"""


def run_measured(argv: Sequence[str], timeout: float, required: str) -> dict[str, Any]:
    """Run ``argv`` in a fresh wrapper process; returns the JSON object of the command's last stdout line (if it
    prints one) plus ``rc``, ``wall_s``, the tail of its ``stderr``, ``peak_rss_mib`` (of the command's process tree)
    and ``status`` ("ok", or "error: ..." when it failed, timed out or its result has no ``required`` key)."""
    import json

    wrapper = [sys.executable, "-c", _MEASURED.format(bench=os.path.dirname(os.path.abspath(__file__))), *argv]
    try:
        proc = subprocess.run(wrapper, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"status": f"error: timeout after {timeout:.0f} s"}
    except (json.JSONDecodeError, IndexError):
        return {"status": f"error: wrapper failed: {proc.stderr[-300:]!r}"}
    if res["rc"] != 0 or required not in res:
        return {**res, "status": f"error: exit {res['rc']}: {res['stderr'][-600:]!r}"}
    return {**res, "status": "ok"}


# --------------------------------------------------------------------------------------------------------- writers
def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits (whole numbers from 1000 on), NaN empty."""
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_csv(path: str, rows: Sequence[dict[str, Any]], columns: Sequence[str], stamp: dict[str, str]) -> str:
    """CSV with ``# key: value`` stamp comment lines first, then a header row and one row per result."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        for line in stamp_lines(stamp):
            f.write(f"# {line}\n")
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return path


def read_csv(path: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Read a file written by :func:`write_csv`: (stamp, rows as strings)."""
    stamp: dict[str, str] = {}
    with open(path, newline="") as f:
        lines = f.readlines()
    body = []
    for line in lines:
        if line.startswith("# "):
            key, _, value = line[2:].rstrip("\n").partition(": ")
            stamp[key] = value
        else:
            body.append(line)
    return stamp, list(csv.DictReader(body))


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(c, "")) if r.get(c) is not None else "" for c in columns) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def write_markdown(path: str, title: str, sections: Sequence[tuple[str, str]], stamp: dict[str, str]) -> str:
    """Markdown file: stamp as an HTML comment, ``# title``, then ``(heading, body)`` sections, then provenance."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    parts = ["<!--", *stamp_lines(stamp), "-->", "", f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    parts += ["## Provenance", "", *[f"- {line}" for line in stamp_lines(stamp)], ""]
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def write_table(out_dir: str, stem: str, title: str, doc: str | None, rows: Sequence[dict[str, Any]],
                columns: Sequence[str], stamp: dict[str, str]) -> None:
    """``out_dir/stem.csv`` and ``out_dir/stem.md`` of ``rows``; the Markdown's "What this is" section is the second
    paragraph of ``doc`` (a benchmark script's docstring)."""
    what = (doc or "").split("\n\n")[1].replace("\n", " ")
    write_csv(os.path.join(out_dir, f"{stem}.csv"), rows, columns, stamp)
    write_markdown(os.path.join(out_dir, f"{stem}.md"), title,
                   [("What this is", what), ("Results", markdown_table(rows, columns))], stamp)


def write_report(out_dir: str, stem: str, title: str, doc: str, setup: str, rows: Sequence[dict[str, Any]],
                 columns: Sequence[str], stamp: dict[str, str], script: str) -> None:
    """``out_dir/stem.csv`` and ``out_dir/stem.md``: "What this is" (the second paragraph of ``doc``, a script's
    docstring), "Setup", the table and the command line that made it (``script`` + this process's arguments)."""
    write_csv(os.path.join(out_dir, f"{stem}.csv"), rows, columns, stamp)
    write_markdown(os.path.join(out_dir, f"{stem}.md"), title,
                   [("What this is", doc.split("\n\n")[1].replace("\n", " ")), ("Setup", setup),
                    ("Results", markdown_table(rows, columns)),
                    ("Command", f"```bash\npython {script} {shlex.join(sys.argv[1:])}\n```")], stamp)


def new_figure(width: float = 10.0, height: float = 5.5, ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib (Agg) figure and its axes (one Axes, or a list of ``ncols`` Axes when ``ncols`` > 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, (axes[0][0] if ncols == 1 else list(axes[0]))


def save_figure(fig: Any, path: str, stamp: dict[str, str]) -> str:
    """Save ``fig`` as PNG with the stamp as a small footer text."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    footer = (f"{stamp.get('utc_time', '')} | commit {stamp.get('git_commit', '')[:19]} | {stamp.get('machine', '')}"
              f" | torch {stamp.get('torch', '')}, torchrec {stamp.get('torchrec', '')}, fbgemm "
              f"{stamp.get('fbgemm_gpu', '')}\n{stamp.get('command', '')}")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.text(0.01, 0.01, footer, fontsize=6, family="monospace", va="bottom", ha="left", wrap=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
