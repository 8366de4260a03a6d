"""Build small PixelRec-format directories by hand, for precise bad-input tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from multirec.data.pixelrec import COUNT_COLUMNS


def jpeg_bytes(seed: int, size: int = 48, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if mode in ("RGB", "L", "CMYK") else "PNG")
    return buf.getvalue()


def write_raw(
    root: Path,
    n_users: int = 24,
    n_items: int = 16,
    per_user: int = 8,
    seed: int = 0,
    covers: bool = True,
) -> Path:
    """A dense random dataset where every user has ``per_user`` distinct items."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["item_id,user_id,timestamp"]
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        for t, i in enumerate(items):
            rows.append(f"i{i},u{u},{1_600_000_000 + 1000 * t + u}")
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    header = ",".join(["item_id", *COUNT_COLUMNS, "title", "tag", "description"])
    lines = [header]
    for i in range(n_items):
        counts = ",".join(str(int(x)) for x in rng.integers(0, 1000, len(COUNT_COLUMNS)))
        lines.append(f'i{i},{counts},"Title {i}",tag{i % 3},"<b>desc</b> {i}"')
    (root / "item_info.csv").write_text("\n".join(lines) + "\n")
    if covers:
        (root / "covers").mkdir(exist_ok=True)
        for i in range(n_items):
            (root / "covers" / f"i{i}.jpg").write_bytes(jpeg_bytes(i))
    return root
