"""Facts the addons share about a flow (side tables, fail-closed answers), with no mitmproxy import.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
