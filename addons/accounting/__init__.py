"""Accounting: the usage store and its rows, salvage, budgets, metrics, the in-flight record.

Pure logic: nothing here imports mitmproxy or an addon in `addons/`."""
