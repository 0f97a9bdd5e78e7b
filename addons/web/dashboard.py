"""Dashboard: the gateway's one web page (`/dashboard`), usage, cost and health at a glance.

The page is a single self-contained file beside this module (inline CSS and JS, charts drawn as
SVG by its own code): it loads nothing from the network and reads only Clutch's JSON endpoints
(`/usage`, `/usage/timeline`, `/resilience`, `/rankings`) with URLs relative to where it is served.
"""

from __future__ import annotations

import functools
from pathlib import Path

PAGE = Path(__file__).with_name("dashboard.html")
CONTENT_TYPE = "text/html; charset=utf-8"


@functools.cache
def page() -> bytes:
    """The page's bytes, read once per process (it ships with the code, so it cannot change under us)."""
    return PAGE.read_bytes()
