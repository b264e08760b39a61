"""Default ``--script`` of the builtin ``dist.ddp`` in this repository (set in ``.torchxconfig``).

torchx 0.7 reads a positional path after ``dist.ddp``'s options as an argument of the script, not as the script,
and requires exactly one of ``--script`` / ``-m``. With this file as the configured default script, all of these
work from the repository root::

    torchx run -s local_cwd dist.ddp -j 1x8                                  # dlf_torchrec.train, default config
    torchx run -s local_cwd dist.ddp -j 1x8 -- --config X.yaml k=v           # dlf_torchrec.train with arguments
    torchx run -s local_cwd dist.ddp -j 1x8 dlf_torchrec/train.py            # positional script path
    torchx run -s local_cwd dist.ddp -j 1x8 --script dlf_torchrec/train.py   # explicit script (bypasses this file)

Dispatch: if the first argument is an existing ``*.py`` file, it is run as ``__main__`` with the remaining
arguments (exactly as ``python FILE ARGS...`` would); otherwise all arguments go to ``dlf_torchrec.train``.
"""

import os
import runpy
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def is_script(arg: str) -> bool:
    """Whether ``arg`` names a Python script to run (an existing ``*.py`` file) rather than a train argument."""
    return arg.endswith(".py") and os.path.isfile(arg)


def main(argv: list[str]) -> int:
    """Run the script named by ``argv[0]`` if it is one, else ``dlf_torchrec.train`` with ``argv``."""
    if argv and is_script(argv[0]):
        sys.argv = list(argv)
        sys.path[0] = str(Path(argv[0]).resolve().parent)
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:  # the script's sys.exit(code)
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return 0
    sys.path[0] = str(REPO_ROOT)  # import this checkout's package, not siblings of this file
    from dlf_torchrec.train import main as train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
