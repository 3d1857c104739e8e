"""Synthetic accelerometer traces for the fall tests: walking, an impact, lying or sitting."""

from __future__ import annotations

import numpy as np


def signal(parts: list[tuple[str, float, np.ndarray]], rate: float,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ("still" | "walk" | "impact", seconds, gravity direction) pieces, in g;
    (t, acc) at ``rate`` Hz with 0.01 g of seeded noise."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, secs, g in parts:
        n = round(secs * rate)
        tt = np.arange(n) / rate
        a = np.tile(g, (n, 1)) + rng.normal(0, 0.01, (n, 3))
        if kind == "walk":
            a += np.outer(0.45 * np.sin(2 * np.pi * 2.0 * tt), g)
            a[:, 0] += 0.25 * np.sin(2 * np.pi * 1.0 * tt)
        elif kind == "impact":
            a += np.outer(np.hanning(n) * 4.0, g)   # about 5 g peak
        out.append(a)
    acc = np.concatenate(out)
    return np.arange(len(acc)) / rate, acc
