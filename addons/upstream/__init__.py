"""Upstream: the relay and its attempts, the HTTP client, the loopback server, Codex's socket sessions.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
