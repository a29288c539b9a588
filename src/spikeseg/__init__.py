"""spikeseg: semantic segmentation with spiking neural networks."""

__version__ = "0.1.0"

from .errors import SpikesegError  # noqa: E402

__all__ = ["SpikesegError", "__version__"]
