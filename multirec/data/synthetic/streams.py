"""Independent random streams, one per concern of the generator.

Every stream is a numpy Generator seeded from ``(seed, stream id)``, and every cover
from ``(seed, COVERS, item index)``. Draws in one stream therefore never shift another
(adding a draw to the text leaves the interactions alone), and covers come out the same
whichever worker process draws them. The ids are part of the output: renumbering one
changes every sample generated from a seed.
"""

from __future__ import annotations

import numpy as np

IDS = 1
ITEM_TOPICS = 2
ITEM_DEGREES = 3
USER_DEGREES = 4
MATCHING = 5
TIMESTAMPS = 6
COVER_PLAN = 7  # misleading cover topics, cover defects, PNG covers
TEXT = 8
COUNTS = 9
STYLES = 10
COVERS = 11
VAGUE_TEXT = 12  # which items' texts say nothing of their topic


def stream(seed: int, stream_id: int, *index: int) -> np.random.Generator:
    """The generator of stream ``stream_id`` (and of one element, given ``index``)."""
    return np.random.default_rng([seed, stream_id, *index])
