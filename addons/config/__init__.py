"""Configuration: the rules schema, environment overrides, small state files.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
