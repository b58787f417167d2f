"""The peak-RSS child: ``python -m astrosleuth_astro.bench --rss-child SRC DST MODEL PRECISION``
(started by :func:`.memory.measure_rss`)."""

from __future__ import annotations

import sys

from .memory import rss_child

if __name__ == "__main__":  # the peak-RSS child: python -m astrosleuth_astro.bench --rss-child
    if len(sys.argv) == 6 and sys.argv[1] == "--rss-child":
        rss_child(*sys.argv[2:6])
    else:
        sys.exit("usage: python -m astrosleuth_astro.bench --rss-child SRC DST MODEL PRECISION")
