"""OptionCheck: a `--set clutch_...=VALUE` that mitmproxy cannot convert stops the gateway at start,
in one line, instead of leaving a proxy that runs without Clutch.

mitmproxy keeps `--set` values of options it does not know yet (Clutch's, until this script loads) and
converts them once the script's addons have added their options. A value that does not convert
(`clutch_rules_poll_ms=abc`, or an option given twice) raises inside mitmproxy's script loader, after
the proxy has begun to listen; the loader drops the script, logs nothing, and the proxy goes on
forwarding without any of Clutch's addons: no routing, no scope, no key handling, no accounting.

This addon's `load` runs last, when every Clutch option exists, and converts the kept values itself
(what mitmproxy would do next), so the failure is Clutch's to report: the message on stderr and exit
status 2, mitmproxy's own status for a bad command line.
"""

from __future__ import annotations

import sys

from mitmproxy import exceptions

_running = False


def refuse(message: str) -> None:
    """An option value an addon's `configure` cannot take: at start, the same one line on stderr and
    exit 2 as a value that does not convert (mitmproxy would log a traceback, listen, then exit); once
    the gateway runs, an OptionsError, so mitmproxy keeps the old value."""
    if _running:
        raise exceptions.OptionsError(message)
    sys.stdout.flush()
    print(f"clutch: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class OptionCheck:
    def running(self):
        global _running
        _running = True

    def load(self, loader):
        try:
            loader.master.options.process_deferred()
        except exceptions.OptionsError as e:
            sys.stdout.flush()  # mitmproxy's log lines first: one file may hold both
            print(f"clutch: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
