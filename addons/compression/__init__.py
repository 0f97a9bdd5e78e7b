"""Compression of tool outputs: the policy, the transforms and what a shell command reads.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
