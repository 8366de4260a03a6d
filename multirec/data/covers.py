"""Cover image validation: decode every cover once, classify what is wrong with it.

A cover is decoded fully (a truncated JPEG only fails at the end of its data), but
with JPEG draft mode, so the decoder works at reduced scale and validation is fast.
Dimensions are checked from the header before any pixel is decoded, so a
decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from PIL import Image
from tqdm import tqdm

# Status of a cover; only "ok" is usable.
OK, MISSING, CORRUPT, TRUNCATED, TOO_SMALL, BOMB = (
    "ok",
    "missing",
    "corrupt",
    "truncated",
    "too_small",
    "bomb",
)
# Modes that are converted to RGB when the cover is used (counted, not an error).
CONVERTED_MODES = {
    "L": "grayscale",
    "LA": "grayscale",
    "1": "grayscale",
    "CMYK": "cmyk",
    "RGBA": "rgba",
    "P": "palette",
    "PA": "palette",
    "I;16": "16bit",
    "I;16B": "16bit",
    "I;16L": "16bit",
    "I": "16bit",
    "F": "float",
}


def check_cover(path: str | None, min_side: int, max_pixels: int) -> tuple[str, str | None]:
    """Return (status, converted mode name or None) for one cover file."""
    if path is None or not os.path.isfile(path):
        return MISSING, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    return BOMB, None
                if w < min_side or h < min_side:
                    return TOO_SMALL, None
                mode = CONVERTED_MODES.get(img.mode)
                if img.format == "JPEG":
                    img.draft("RGB", (max(min_side, w // 8), max(min_side, h // 8)))
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return BOMB, None
    except OSError as exc:
        return (TRUNCATED if "truncated" in str(exc).lower() else CORRUPT), None
    except (SyntaxError, ValueError, Image.UnidentifiedImageError):
        return CORRUPT, None
    return OK, mode


def _check_chunk(args: tuple[Sequence[str | None], int, int]) -> list[tuple[str, str | None]]:
    paths, min_side, max_pixels = args
    return [check_cover(p, min_side, max_pixels) for p in paths]


def check_covers(
    paths: Sequence[str | None],
    min_side: int,
    max_pixels: int,
    workers: int = 1,
    progress: bool = True,
) -> tuple[list[str], Counter]:
    """Validate covers in parallel; return per-item status and a counter for the manifest."""
    chunk = 256
    jobs = [(paths[i : i + chunk], min_side, max_pixels) for i in range(0, len(paths), chunk)]
    bar = tqdm(total=len(paths), desc="validating covers", unit="img", disable=not progress)
    results: list[tuple[str, str | None]] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_check_chunk, jobs):
                results.extend(part)
                bar.update(len(part))
    else:
        for job in jobs:
            part = _check_chunk(job)
            results.extend(part)
            bar.update(len(part))
    bar.close()
    counts: Counter = Counter()
    for status, mode in results:
        counts[f"cover_{status}"] += 1
        if mode:
            counts[f"cover_converted_{mode}"] += 1
    return [s for s, _ in results], counts
