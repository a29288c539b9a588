"""Input encoding: how images and event streams become what a spiking network reads.

* :mod:`spikeseg.encoding.images` — static images: Poisson rate coding (section 4.2 of the
  paper), its signed variant, direct (analog) coding;
* :mod:`spikeseg.encoding.events` — event-camera streams: Tonic-style event arrays, ON/OFF count
  frames, voxel grids, a window split into T steps.

Both are encoders of raw input; they know nothing of datasets (the dataset loaders use them).
"""

from .events import (
    EVENT_DTYPE,
    REPRESENTATIONS,
    as_events,
    event_frames,
    make_events,
    representation_channels,
    to_count_frames,
    to_voxel_grid,
)
from .images import CAFFE_MEAN_RGB, ENCODINGS, DirectEncoder, PoissonEncoder, build_encoder

__all__ = [
    "PoissonEncoder",
    "DirectEncoder",
    "build_encoder",
    "ENCODINGS",
    "CAFFE_MEAN_RGB",
    "EVENT_DTYPE",
    "REPRESENTATIONS",
    "as_events",
    "event_frames",
    "make_events",
    "representation_channels",
    "to_count_frames",
    "to_voxel_grid",
]
