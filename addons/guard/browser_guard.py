"""Who may reach what: requests a web page could have sent never spend the user's keys or read
Clutch's own endpoints.

Pure logic, no mitmproxy. A page the user visits can make the browser send requests to the gateway:
a cross-site POST with `Content-Type: text/plain` needs no CORS preflight, and a page that rebinds its
own DNS name to 127.0.0.1 can even read the answers (same-origin for the browser). What tells them
apart from an agent:

* a browser sends `Origin` on every cross-origin request and on every POST, and `Sec-Fetch-Site` on
  every request; no coding agent sends either (Node's fetch sends only `Sec-Fetch-Mode: cors`,
  checked), so `Sec-Fetch-Mode` says nothing;
* a browser cannot send `application/json` across origins without a preflight, which Clutch never
  grants: agents' SDKs all send JSON; a body without a content type is accepted (a browser that
  sends one also sends `Origin`);
* a rebinding page still sends its own name as `Host`, never a loopback name or the address the
  client connected to.

One origin is not a web page of another site: Clutch's own, `http://<loopback Host>` on the port the
client connected to (the forward entry), where every path is answered by Clutch itself. Its pages
(the rules page's save) send `Origin` on their POSTs; `own_origin` says when that Origin is theirs.

Which rules apply depends on the request (`refusal`): an LLM request anywhere, Clutch's own
endpoints, and everything on a reverse (base-URL) entry, where Clutch fills in the provider's key.
Plain proxying for other clients on the forward entry is not touched: a browser the user points at
the proxy browses as before.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping

LLM, LOCAL, OTHER = "llm", "local", "other"  # what a request is for
SAFE_FETCH_SITES = ("none", "same-origin")  # typed in the address bar; the page's own origin
PREFIX = "/__clutch"  # Clutch's endpoints on any entry


@dataclasses.dataclass(frozen=True)
class Arrival:
    """Where a request came in and where it goes."""

    kind: str  # LLM, LOCAL or OTHER
    reverse: bool  # came in on a reverse entry
    host_header: str | None  # the Host the client sent (a reverse entry's, before it is rewritten)
    host: str  # where the request goes: from the URL, or from Host for a request sent straight to the port
    port: int
    entry: tuple[str, int]  # the address the client connected to
    clutch_host: str  # the reserved name that reaches the endpoints through the proxy (clutch.local)


def refusal(arrival: Arrival, headers: Mapping[str, str]) -> str | None:
    """Why the request must be refused (one line, for the agent, the log and the flow), or None."""
    checked = arrival.reverse or arrival.kind in (LLM, LOCAL)
    own = own_origin(arrival.host_header) if arrival.kind == LOCAL and not arrival.reverse \
        and arrival.port == arrival.entry[1] else None
    if checked and (why := web_page(headers, own)):
        return why
    if arrival.reverse:
        if not _ours(host_name(arrival.host_header), arrival.entry):
            return _foreign_host(arrival.host_header)
        return content_type_refusal(headers)
    # the forward entry: a request for the gateway's own port by another name is DNS rebinding (or
    # a loop back into the gateway), whatever its path
    name = host_name(arrival.host) or ""
    if arrival.port == arrival.entry[1] and not _ours(name, arrival.entry):
        return _foreign_host(arrival.host_header or arrival.host)
    if arrival.kind == LOCAL and not _ours(name, arrival.entry) \
            and name != arrival.clutch_host.lower():
        return _foreign_host(arrival.host_header or arrival.host)
    return None


def web_page(headers: Mapping[str, str], own: str | None = None) -> str | None:
    """Why the headers are a web page's (Origin, Sec-Fetch-Site), or None. `own`: the one Origin that
    is Clutch's own page (own_origin), accepted; None accepts no Origin at all."""
    origin = headers.get("origin")
    if origin is not None and (own is None or origin.strip().lower() != own):
        return "the request carries an Origin header (sent by web pages)"
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in SAFE_FETCH_SITES:
        return f"Sec-Fetch-Site {site[:40]!r} (a web page's request)"
    return None


def own_origin(host_header: str | None) -> str | None:
    """The Origin of Clutch's own pages for a request sent straight to the gateway with this Host:
    `http://` and the Host, when the Host is a loopback name; None otherwise (a rebinding page's
    name, the reserved clutch.local, a reverse entry's provider pages)."""
    if not loopback_name(host_header):
        return None
    return "http://" + str(host_header).strip().lower()


def write_refusal(method: str, host_header: str | None, headers: Mapping[str, str], client_is_loopback: bool,
                  own_page: bool = False) -> tuple[int, str] | None:
    """(status, why) when a request that changes Clutch's state must be refused; None when it may go
    ahead. Stricter than `refusal` for reads: POST only, a client on this machine, a loopback Host
    (not clutch.local), no other site's Origin or Sec-Fetch-Site, the body declared application/json
    (a non-simple request: a page of another origin cannot send it without a CORS preflight, which
    Clutch never grants). `own_page`: Clutch's own page (own_origin) may send it."""
    if method != "POST":
        return 405, "use POST (this endpoint changes state)"
    if not client_is_loopback:
        return 403, "only clients on this machine may change Clutch's state"
    if not loopback_name(host_header):
        return 403, f"Host {str(host_header)[:80]!r} is not a loopback name (127.0.0.1, localhost, ::1)"
    if why := web_page(headers, own_origin(host_header) if own_page else None):
        return 403, f"refused: {why}"
    media = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return 403, "send the body as content-type application/json"
    return None


def content_type_refusal(headers: Mapping[str, str]) -> str | None:
    """A body a browser may send across origins without asking (text/plain, a form) is refused;
    JSON (application/json, */*+json) and no content type at all are not."""
    value = headers.get("content-type")
    if value is None:
        return None
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.endswith("+json") and "/" in media):
        return None
    return f"content type {media[:60]!r}: send the body as application/json"


def loopback_name(host_header: str | None) -> bool:
    """Is the Host a loopback name (localhost, 127.0.0.0/8, ::1), with or without a port?"""
    name = host_name(host_header)
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str | None) -> str | None:
    """The name part of a Host value ("[::1]:8780" -> "::1"), lower case; None for none."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def local_path(path: str, host: str, port: int, clutch_host: str,
               listen: list[tuple[str, int]]) -> str | None:
    """The endpoint a request asks for (with the PREFIX taken off), or None when it is not one of
    Clutch's: under PREFIX on any entry, any path at the reserved name, any path sent straight to a
    listen address (by a loopback name or the address itself)."""
    path = path.split("?", 1)[0]
    if path == PREFIX or path.startswith(PREFIX + "/"):
        return path[len(PREFIX):] or "/"
    name = host.lower()
    if name == clutch_host.lower():
        return path
    for listen_host, listen_port in listen:
        if port == listen_port and (name == listen_host or loopback_name(name)):
            return path
    return None


def _ours(name: str | None, entry: tuple[str, int]) -> bool:
    return name is not None and (loopback_name(name) or name == str(entry[0]).lower().removeprefix("::ffff:"))


def _foreign_host(host: str | None) -> str:
    return (f"Host {str(host)[:80]!r} is neither a loopback name (127.0.0.1, localhost, ::1) nor the "
            "address the client connected to (a DNS rebinding page sends its own name)")
