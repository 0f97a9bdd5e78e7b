"""Hostile input and secrets: body limits and decoding, header values, request shapes, browser requests,
key masks, user tokens.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
