"""Fallback: failure classification, cascades, breakers, quotas and sticky sessions.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
