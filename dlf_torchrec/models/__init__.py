"""Models. Importing this package registers every built-in model with the registry."""

from dlf_torchrec.models import dcnv2, dnn  # noqa: F401
