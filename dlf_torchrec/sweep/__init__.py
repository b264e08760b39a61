"""Hyper-parameter sweeps of TorchX training runs: ``python -m dlf_torchrec.sweep --config BASE --space SPACE``
(see :mod:`dlf_torchrec.sweep.__main__` and the README)."""
