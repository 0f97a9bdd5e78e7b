"""Routing: signals, the routing decision, the custom router and the upstream plan.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
