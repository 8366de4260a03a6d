"""Synthetic PixelRec-format datasets with a known latent structure.

Why this exists: a fresh clone must run end to end without downloading PixelRec, and the
sample must be *informative* -- a content-aware recommender has to be able to beat
popularity on it, otherwise every comparison run on the sample is meaningless. So the data
is generated from latent topics:

* every item has a topic; its title, tag and description words come mostly from that
  topic's vocabulary (pseudo words built from topic-specific roots, so sub-word tokenisers
  see shared pieces), mixed with shared English filler words (:mod:`.item_text`);
* its cover is drawn with the topic's pattern, palette and shape plus per-item jitter and
  noise (:mod:`.cover_art`); a share of covers is *misleading* (drawn in another topic's
  style, the paper's "clickbait thumbnail"), so images carry less signal than text;
* a *vague* share of items has titles, tags and descriptions of filler words only ("my
  daily vlog part"), as many real titles are: for those the cover is the only content that
  shows the topic, so covers add something the texts lack and an ablation can show it;
* users prefer a few topics: about 85 % of their interactions fall in them, the rest is
  popularity-driven noise (:mod:`.interactions`); item popularity is Zipf-like within each
  topic;
* per-user and per-item counts follow exact degree sequences (:mod:`.degrees`; every user
  has at least 5 interactions; the ``pixelrec50k`` preset reproduces the paper's Table 1
  totals, means and maxima, see :mod:`.presets`) and interactions are unique
  (user, item) pairs;
* a small share of inputs is broken on purpose (:mod:`.defects`; missing, corrupt,
  truncated and tiny covers; grayscale, CMYK, RGBA, palette and 16-bit covers; empty
  titles and texts; HTML in descriptions; missing counts) so the default run exercises the
  validation path. ``broken_share=0`` gives a clean dataset.

:mod:`.world` draws all of it; :mod:`.tables` and :mod:`.rendering` write it out, and
:func:`generate_sample` ties them together; :func:`read_world` draws a written sample's world
again (its users' tastes are written nowhere), for measuring how close models come to the
ranking the generator itself would make (``multirec.bench.ceiling``).

Output directory (PixelRec's layout, see ``docs/own-data.md``)::

    interactions.csv   item_id,user_id,timestamp   (sorted by timestamp; increasing per user)
    item_info.csv      item_id,view_number,...,barrage_number,title,tag,description
    covers/            {item_id}.jpg, some {item_id}.png (absent when covers=False)
    _topics.csv        ground truth for analysis, not part of PixelRec:
                       item_id,topic,cover_topic,misleading,vague_text,cover_defect
                       (cover_defect: empty, or one of COVER_DEFECTS)
    _sample.json       the generator's settings and counts, so callers can tell whether an
                       existing sample matches what they asked for

The same seed gives byte-identical files: every random stream is a numpy Generator seeded
from ``(seed, stream id)`` and each cover from ``(seed, stream id, item index)`` (see
:mod:`.streams`), so the result does not depend on the number of worker processes.
"""

from multirec.data.synthetic.defects import COVER_DEFECTS
from multirec.data.synthetic.generate import generate_sample, is_current, read_world
from multirec.data.synthetic.presets import PRESETS, SamplePreset

__all__ = [
    "COVER_DEFECTS",
    "PRESETS",
    "SamplePreset",
    "generate_sample",
    "is_current",
    "read_world",
]
