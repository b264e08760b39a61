"""Models. Importing this package registers every built-in model with the registry."""

from dlf_torchrec.models import dcnv2, dlf, dnn, lr, tf4ctr  # noqa: F401
