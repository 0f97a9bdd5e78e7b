"""The gateway's own web face: the dashboard and the breaker reset endpoint.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
