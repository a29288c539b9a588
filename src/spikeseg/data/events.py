"""Event representations, as imported by earlier versions: they live in :mod:`spikeseg.encoding.events`.

This module only re-exports them (datasets and user code may import either path).
"""

from ..encoding.events import (  # noqa: F401
    EVENT_DTYPE,
    REPRESENTATIONS,
    __all__,
    as_events,
    event_frames,
    make_events,
    representation_channels,
    to_count_frames,
    to_voxel_grid,
)
