"""Models: OpenRouter's catalog, the ranking and the rankings book.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
