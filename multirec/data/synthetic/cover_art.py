"""What a cover looks like: each topic's pattern, shape and palette, drawn with jitter.

Covers of one topic share a pattern, a shape and colours, with per-item jitter and
noise, so an image encoder can recover the topic; misleading covers (chosen in
:mod:`multirec.data.synthetic.world`) are drawn in another topic's style.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

N_PATTERNS = 8
N_SHAPES = 8


def topic_styles(rng: np.random.Generator, n_topics: int) -> dict[str, np.ndarray]:
    """Pattern, shape, frequency, angle and palette per topic.

    Topics sharing a pattern never share a shape (the shape shifts by 3 per block of
    ``N_PATTERNS`` topics), and hues are evenly spaced with a stride chosen so that topics
    sharing a pattern or a shape get hues as far apart as possible.
    """
    t = np.arange(n_topics)
    pattern = t % N_PATTERNS
    shape = (pattern + 3 * (t // N_PATTERNS)) % N_SHAPES
    related = (pattern[:, None] == pattern[None, :]) | (shape[:, None] == shape[None, :])
    np.fill_diagonal(related, False)

    def closest_related_hues(stride: int) -> float:
        hue = (stride * t % n_topics) / n_topics
        gap = np.abs(hue[:, None] - hue[None, :])
        gap = np.minimum(gap, 1.0 - gap)
        return float(gap[related].min()) if related.any() else 1.0

    strides = [k for k in range(1, n_topics + 1) if math.gcd(k, n_topics) == 1]
    stride = max(strides, key=closest_related_hues)
    palettes = np.empty((n_topics, 3, 3))
    for k in range(n_topics):
        hue = (stride * k % n_topics) / n_topics
        sat, val = rng.uniform(0.45, 0.75), rng.uniform(0.8, 0.95)
        palettes[k, 0] = colorsys.hsv_to_rgb(hue, sat, val)
        palettes[k, 1] = colorsys.hsv_to_rgb((hue + 0.07) % 1.0, 0.85, rng.uniform(0.3, 0.5))
        palettes[k, 2] = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.9, 0.95)
    return {
        "pattern": pattern,
        "shape": shape,
        "freq": rng.uniform(2.5, 7.0, n_topics),
        "angle": rng.uniform(0.0, np.pi, n_topics),
        "palette": palettes * 255.0,  # background low, background high, shapes; RGB 0-255
    }


def draw_cover(
    styles: dict[str, np.ndarray], topic: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """An RGB uint8 cover: topic pattern in topic colours, 1-3 topic shapes, jitter, noise."""
    g = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(g, g, indexing="ij")
    freq = styles["freq"][topic] * rng.uniform(0.85, 1.15)
    angle = styles["angle"][topic] + rng.normal(0.0, 0.15)
    phase = rng.uniform(0.0, 2 * np.pi)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    val = _pattern(int(styles["pattern"][topic]), x, y, u, v, freq, phase, (cx, cy), rng)
    palette = styles["palette"][topic] + rng.normal(0.0, 12.0, (3, 3))
    img = palette[0] + (palette[1] - palette[0]) * val[..., None]
    _stamp_shapes(img, x, y, int(styles["shape"][topic]), palette[2], rng)
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0.0, 8.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pattern(
    kind: int,
    x: np.ndarray,
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    freq: float,
    phase: float,
    centre: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Background intensity in [0, 1] per pixel (``u``, ``v``: coordinates rotated by the angle)."""
    cx, cy = centre
    if kind == 0:  # stripes
        return 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + phase)
    if kind == 1:  # rings
        return 0.5 + 0.5 * np.sin(2 * np.pi * freq * np.hypot(x - cx, y - cy) + phase)
    if kind == 2:  # checkerboard
        return (np.floor(freq * u + phase) + np.floor(freq * v)) % 2
    if kind == 3:  # spokes
        return 0.5 + 0.5 * np.sin(round(2 * freq) * np.arctan2(y - cy, x - cx) + phase)
    if kind == 4:  # dot grid
        du = (freq * u + phase) % 1.0 - 0.5
        dv = (freq * v) % 1.0 - 0.5
        return (np.hypot(du, dv) < 0.3).astype(float)
    if kind == 5:  # waves
        return 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + 2.5 * np.sin(np.pi * freq * v + phase))
    if kind == 6:  # plasma
        dirs = rng.uniform(0.0, 2 * np.pi, 3)
        val = sum(
            np.sin(2 * np.pi * freq * 0.5 * (x * np.cos(d) + y * np.sin(d)) + phase * i)
            for i, d in enumerate(dirs)
        )
        return 0.5 + val / 6.0
    # banded gradient
    return np.clip(0.6 * u + 0.4 * ((freq * v + phase) % 1.0), 0.0, 1.0)


def _stamp_shapes(
    img: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    kind: int,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Paint 1-3 shapes of one kind in ``colour`` onto ``img`` in place, each placed at random."""
    for _ in range(int(rng.integers(1, 4))):
        sx, sy = rng.uniform(0.2, 0.8, 2)
        r = rng.uniform(0.1, 0.25)
        rot = rng.uniform(0.0, 2 * np.pi)
        du = (x - sx) * np.cos(rot) + (y - sy) * np.sin(rot)
        dv = -(x - sx) * np.sin(rot) + (y - sy) * np.cos(rot)
        mask = _shape_mask(kind, du, dv, r)
        img[mask] = img[mask] * 0.1 + colour * 0.9


def _shape_mask(kind: int, du: np.ndarray, dv: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside a shape of radius ``r`` (``du``, ``dv``: offsets in the shape's frame)."""
    if kind == 0:  # disc
        return np.hypot(du, dv) < r
    if kind == 1:  # square
        return np.maximum(abs(du), abs(dv)) < r * 0.8
    if kind == 2:  # triangle
        return (dv > -r * 0.5) & (abs(du) < (r - dv) * 0.6)
    if kind == 3:  # ring
        return abs(np.hypot(du, dv) - r) < r * 0.25
    if kind == 4:  # cross
        return ((abs(du) < r / 3) & (abs(dv) < r)) | ((abs(dv) < r / 3) & (abs(du) < r))
    if kind == 5:  # diamond
        return abs(du) + abs(dv) < r
    if kind == 6:  # flat ellipse
        return (du / r) ** 2 + (dv / (0.4 * r)) ** 2 < 1
    # star
    return np.hypot(du, dv) < r * (0.6 + 0.4 * np.cos(5 * np.arctan2(dv, du)))
