"""Wire vocabulary: the dialects, SSE framing, agent identity, token counting and a provider answer's usage.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
