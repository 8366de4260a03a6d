"""Sample sizes: how many users, items and interactions each named sample has."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplePreset:
    """Size and shape of one sample; degree sequences hit these totals and maxima exactly."""

    n_users: int
    n_items: int
    n_interactions: int
    max_user: int  # interactions of the most active user
    max_item: int  # interactions of the most popular item
    min_item: int  # interactions of the least popular item (users always have >= 5)
    n_topics: int
    cover_size: int  # pixels, square
    misleading_share: float = 0.3
    broken_share: float = 0.02
    vague_share: float = 0.0


PRESETS: dict[str, SamplePreset] = {
    # Seconds; tests. Items start at 5 interactions so a 5-core keeps most users.
    "tiny": SamplePreset(60, 80, 600, 25, 20, 5, 5, 64),
    # Enough users for stable metrics, small enough to train in seconds: the learning tests.
    "mini": SamplePreset(300, 300, 7_500, 80, 80, 5, 8, 64),
    # The README default: the main job (cover extraction at ~15 images/s plus training)
    # takes a few minutes on 2 cores. A quarter of its titles are vague, so that, as with
    # real titles, the cover alone shows some items' topic; with 30 % of the covers
    # misleading, each modality then tells what the other hides.
    "small": SamplePreset(900, 1_100, 19_800, 150, 150, 5, 18, 128, vague_share=0.25),
    # The paper's Table 1 (PixelRec50K): 19.79 per user, 11.94 per item on average.
    "pixelrec50k": SamplePreset(50_000, 82_865, 989_494, 434, 146, 1, 24, 64),
}
