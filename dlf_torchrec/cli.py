"""How every command-line tool reports an error: one line on stderr, ``<tool>: error: <message>``, no traceback.

Exit status 2 for usage and config problems (argparse errors, :class:`~dlf_torchrec.config.ConfigError`, whose
message is prefixed ``config error:``, and :class:`UsageError`), 1 for data and run problems (bad or missing input,
an unusable run directory, the package's error types listed in :data:`DATA_ERRORS`, ``OSError``, ``EOFError``) and
1 for anything unexpected, which is named by its type with a hint to ``--debug``. With ``--debug`` the exception is
raised again, so Python prints the traceback. A tool builds its parser with :class:`ArgumentParser` and runs its
body through :func:`run`::

    def main(argv: list[str] | None = None) -> int:
        args = parse_args(argv)  # cli.ArgumentParser("predict", ...).parse_args(argv)
        return cli.run("predict", lambda: _predict(args), args.debug, PredictError)

This module imports only the standard library: ``benchmarks/reference.py`` runs it without the package's
dependencies.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Callable
from typing import Any, NoReturn

ErrorTypes = tuple[type[BaseException], ...]

# The package's error types by defining module, looked up in sys.modules when an error is reported (an exception of
# one of these types means its module is imported), so that importing this module imports none of them.
USAGE_ERRORS = {"dlf_torchrec.config": ("ConfigError",)}
DATA_ERRORS = {
    "dlf_torchrec.data.reading": ("DataError", "BadRowError"),
    "dlf_torchrec.data.rawinput": ("RawInputError",),
    "dlf_torchrec.data.features": ("VocabMismatch",),
    "dlf_torchrec.run": ("RunError",),
    "dlf_torchrec.training.runlock": ("RunDirLocked",),
    "dlf_torchrec.training.loop": ("NonFiniteLossError",),
}
BUILTIN_DATA_ERRORS: ErrorTypes = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


class UsageError(ValueError):
    """A bad option value found after parsing (exit status 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` named ``tool``, with a ``--debug`` flag, that reports an error in one line
    (``<tool>: error: <message>``, exit status 2) instead of the usage text and the error."""

    def __init__(self, tool: str, **kwargs: Any) -> None:
        super().__init__(prog=tool, **kwargs)
        self.add_argument("--debug", action="store_true", help="on an error, show its Python traceback")

    def error(self, message: str) -> NoReturn:
        self.exit(2, error_line(self.prog, message) + "\n")


def error_line(tool: str, message: str) -> str:
    """``<tool>: error: <message>`` with the message's lines joined into one."""
    return f"{tool}: error: " + " ".join(line.strip() for line in message.splitlines() if line.strip())


def _package_types(by_module: dict[str, tuple[str, ...]]) -> ErrorTypes:
    return tuple(getattr(sys.modules[m], name) for m, names in by_module.items() if m in sys.modules for name in names)


def exit_status(error: BaseException, data_errors: ErrorTypes = ()) -> int | None:
    """2 for a usage or config error, 1 for a data or run error (``data_errors`` are the tool's own), None for an
    unexpected one."""
    if isinstance(error, (UsageError, *_package_types(USAGE_ERRORS))):
        return 2
    if isinstance(error, (*BUILTIN_DATA_ERRORS, *_package_types(DATA_ERRORS), *data_errors)):
        return 1
    return None


def describe(error: BaseException, status: int | None) -> str:
    """The message of ``error`` as the one error line shows it."""
    text = str(error) or type(error).__name__
    if status is None:
        return f"{type(error).__name__}: {text} (run with --debug for the traceback)"
    if isinstance(error, _package_types(USAGE_ERRORS)):
        return f"config error: {text}"
    return text


def run(tool: str, body: Callable[[], int], debug: bool, *data_errors: type[BaseException]) -> int:
    """``body()``'s exit status; an exception is reported as one line on stderr (see the module docstring) and
    gives its exit status, or, with ``debug``, is raised again."""
    try:
        return body()
    except Exception as e:
        if debug:
            raise
        status = exit_status(e, data_errors)
        print(error_line(tool, describe(e, status)), file=sys.stderr, flush=True)
        return 1 if status is None else status
