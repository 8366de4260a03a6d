"""Inputs broken on purpose, so that the default run exercises the validation path.

A ``broken`` share of items gets a defect: missing, corrupt, truncated and tiny covers;
grayscale, CMYK, RGBA, palette and 16-bit covers; empty titles and texts; HTML in
descriptions. ``broken_share=0`` gives a clean dataset. Missing counts are drawn with
the counts themselves.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

# The first four make a cover unusable; the rest are valid images in modes a loader has
# to convert to RGB.
COVER_DEFECTS = (
    "missing",
    "corrupt",
    "truncated",
    "too_small",
    "grayscale",
    "cmyk",
    "rgba",
    "palette",
    "16bit",
)
PNG_DEFECTS = frozenset({"rgba", "palette", "16bit"})  # modes JPEG cannot store
PNG_SHARE = 0.03  # valid RGB covers saved as .png, as in real dumps
_HTML_SNIPPETS = ("<br>", "<br/>", "<b>new</b>", "&amp;", "<p>", "</p>", '<a href="#">link</a>')


def choose_cover_defects(
    rng: np.random.Generator, n_items: int, broken: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which items get which cover defect (``""``: none), and which covers are PNG files.

    Every defect kind appears ``ceil(broken * n_items / kinds)`` times (so even ``tiny``
    exercises every kind; about ``broken`` of all items overall).
    """
    per_kind = math.ceil(broken * n_items / len(COVER_DEFECTS)) if broken > 0 else 0
    n_png = round(PNG_SHARE * n_items)
    chosen = rng.permutation(n_items)
    defect = np.full(n_items, "", dtype=object)
    n_defect = min(per_kind * len(COVER_DEFECTS), n_items)
    defect[chosen[:n_defect]] = np.repeat(np.array(COVER_DEFECTS, dtype=object), per_kind)[
        :n_defect
    ]
    png = np.zeros(n_items, dtype=bool)
    png[chosen[n_defect : n_defect + n_png]] = True
    png[np.isin(defect, list(PNG_DEFECTS))] = True
    return defect.astype(str), png


def encode_cover(img: np.ndarray, defect: str, png: bool, rng: np.random.Generator) -> bytes | None:
    """File bytes for one RGB cover with its defect applied (None: the file is missing)."""
    if defect == "missing":
        return None
    if defect == "corrupt":
        return rng.bytes(int(rng.integers(200, 2000)))
    pil = _convert(img, defect)
    buf = io.BytesIO()
    if png:
        pil.save(buf, format="PNG")
    else:
        pil.save(buf, format="JPEG", quality=88)
    data = buf.getvalue()
    if defect == "truncated":
        data = data[: len(data) // 2]
    return data


def _convert(img: np.ndarray, defect: str) -> Image.Image:
    """The cover as a PIL image in the size or mode its defect asks for."""
    pil = Image.fromarray(img, "RGB")
    if defect == "too_small":
        pil = pil.resize((8, 8))
    elif defect == "grayscale":
        pil = pil.convert("L")
    elif defect == "cmyk":
        pil = pil.convert("CMYK")
    elif defect == "rgba":
        alpha = np.linspace(64, 255, img.shape[1], dtype=np.uint8)[None, :].repeat(img.shape[0], 0)
        pil = Image.fromarray(np.dstack([img, alpha]), "RGBA")
    elif defect == "palette":
        pil = pil.quantize(64)
    elif defect == "16bit":
        gray = np.asarray(pil.convert("L"), dtype=np.uint16) * 257
        pil = Image.fromarray(gray)  # mode I;16
    return pil


def break_texts(
    rng: np.random.Generator,
    titles: list[str | None],
    tags: list[str | None],
    descriptions: list[str | None],
    broken: float,
) -> None:
    """Empty some titles (a third of those also lose tag and description), add HTML to others.

    Edits the lists in place; at least two titles go and one description gets HTML, so
    even ``tiny`` has each kind.
    """
    n = len(titles)
    order = rng.permutation(n)
    n_empty = max(2, math.ceil(broken * n / 2))
    for k, i in enumerate(order[:n_empty]):
        titles[i] = None
        if k < max(1, n_empty // 3):  # no text at all
            tags[i] = None
            descriptions[i] = None
    n_html = max(1, round(2 * broken * n))
    for i in order[n_empty : n_empty + n_html]:
        snippet = _HTML_SNIPPETS[int(rng.integers(len(_HTML_SNIPPETS)))]
        descriptions[i] = f"<p>{descriptions[i]} {snippet}</p>"
