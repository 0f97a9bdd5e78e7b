"""Translation between dialects: one module per direction, streams, errors, Pi's repair.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
