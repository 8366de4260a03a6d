"""Cover image validation: decode every cover once, classify what is wrong with it.

A cover is decoded fully (a truncated JPEG only fails at the end of its data), but
with JPEG draft mode, so the decoder works at reduced scale and validation is fast.
Dimensions are checked from the header before any pixel is decoded, so a
decompression bomb is refused without allocating it.

Worker processes never outlive the preparation: they are terminated when it ends in any
way Python sees (an error, Ctrl-C, SIGTERM), and each one exits by itself when its parent
is gone, which covers a parent killed with SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from multiprocessing.pool import IMapIterator

from PIL import Image
from tqdm import tqdm

from multirec.errors import DataError

# Status of a cover; only "ok" is usable.
OK, MISSING, CORRUPT, TRUNCATED, TOO_SMALL, BOMB = (
    "ok",
    "missing",
    "corrupt",
    "truncated",
    "too_small",
    "bomb",
)
JOB_SIZE = 256  # covers per task sent to a worker process
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
    except PermissionError:
        raise DataError(
            f"cannot read cover {path} (permission denied); make the covers readable"
        ) from None
    except OSError as exc:
        return (TRUNCATED if "truncated" in str(exc).lower() else CORRUPT), None
    except (SyntaxError, ValueError, Image.UnidentifiedImageError):
        return CORRUPT, None
    return OK, mode


def _check_chunk(args: tuple[Sequence[str | None], int, int]) -> list[tuple[str, str | None]]:
    paths, min_side, max_pixels = args
    return [check_cover(p, min_side, max_pixels) for p in paths]


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init_worker(parent: int) -> None:
    """Ignore Ctrl-C (the parent stops the pool), die at once on SIGTERM (the parent's
    handler, inherited, would unwind the worker instead), and exit once the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _next_result(parts: IMapIterator) -> list[tuple[str, str | None]]:
    """The next worker result, waking twice a second while waiting.

    The kernel may hand Ctrl-C or SIGTERM to any thread (polars starts many); Python runs
    the handler, which stops the pool, only when the main thread next runs bytecode.
    """
    while True:
        try:
            return parts.next(timeout=0.5)
        except multiprocessing.TimeoutError:
            continue


def check_covers(
    paths: Sequence[str | None],
    min_side: int,
    max_pixels: int,
    workers: int = 1,
    progress: bool = True,
) -> tuple[list[str], Counter]:
    """Validate covers in parallel; return per-item status and a counter for the manifest."""
    jobs = [(paths[i : i + JOB_SIZE], min_side, max_pixels) for i in range(0, len(paths), JOB_SIZE)]
    bar = tqdm(total=len(paths), desc="validating covers", unit="img", disable=not progress)
    results: list[tuple[str, str | None]] = []
    if workers > 1 and len(jobs) > 1:
        # Leaving the block terminates the workers, also when it is left by an exception.
        with multiprocessing.Pool(workers, _init_worker, (os.getpid(),)) as pool:
            parts = pool.imap(_check_chunk, jobs)
            for _ in jobs:
                part = _next_result(parts)
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
