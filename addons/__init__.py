"""Clutch: an intercepting gateway for AI coding agents, built as mitmproxy addons.

`addons/clutch.py` is the script mitmproxy loads; every other module here is one concern.
Modules that do not import mitmproxy hold the pure logic (rules, dialects, identity, SSE).
"""

__version__ = "0.1.0"
