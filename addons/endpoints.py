"""Endpoints: Clutch's own small HTTP API, answered locally and never forwarded.

Reachable three ways: directly on the listen port (`curl http://127.0.0.1:8780/health`), through
the proxy at a reserved host (`http://clutch.local/health`), and under `/__clutch/` on any entry,
reverse-proxy ports included. Only for a loopback Host name (or the reserved host through the
proxy), and never for a web page on another site: the Guard addon (browser_guard.py) refuses those
first, so a DNS rebinding page cannot read usage or requests.

All of them only read, except POST /breakers/reset and POST /rules (the rules page's save), which
only a client on this machine may use, and never a web page of another origin
(browser_guard.write_refusal says how one is told apart; a save also needs the per-start token
the rules page reads from /rules/state). `GET /` lists them
(front_page.py), and the gateway logs the same facts once it listens (`running`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time

from mitmproxy import ctx, http
from mitmproxy.proxy.mode_specs import ReverseMode

from addons import __version__
from addons.accounting.metrics import CONTENT_TYPE, Metrics
from addons.accounting.reports import UsageStoreError, parse_time
from addons.budget import Budget, SpendingUnknown
from addons.certs import Certs
from addons.config.rules import RulesError
from addons.guard.browser_guard import PREFIX, local_path
from addons.journal import Journal
from addons.models.rankings_book import RankingsBook
from addons.resilience import Resilience
from addons.rulebook import Rulebook
from addons.scope import is_loopback
from addons.usage import Usage
from addons.web import breaker_reset, dashboard, front_page, rules_page

logger = logging.getLogger(__name__)

ENDPOINTS = ["/", "/health", "/resilience", "/requests", "/usage", "/usage/timeline", "/metrics", "/dashboard",
             "/rules", "/rules/state", "/rankings", "/ca.pem", "/docs", "POST /breakers/reset", "POST /rules"]


class Endpoints:
    def __init__(self, rulebook: Rulebook, certs: Certs, resilience: Resilience | None = None,
                 journal: Journal | None = None, usage: Usage | None = None, metrics: Metrics | None = None,
                 budget: Budget | None = None, rankings: RankingsBook | None = None, shutdown=None,
                 credentials=None):
        self._rulebook = rulebook
        self._certs = certs
        self._credentials = credentials  # a team gateway's tokens (credentials.py): their problems
        self._resilience = resilience
        self._journal = journal
        self._usage = usage
        self._metrics = metrics
        self._budget = budget
        self._rankings = rankings
        self._shutdown = shutdown  # what the previous gateway lost in flight (shutdown.Shutdown)
        self._started = time.time()
        self._token = rules_page.new_token()  # the rules page's write token, this start's only

    def load(self, loader):
        loader.add_option("clutch_host", str, "clutch.local",
                          "Reserved host name that reaches Clutch's endpoints through the proxy.")

    def running(self):
        """mitmproxy calls `running` once its servers listen: the banner, where everything is. (Sync on
        purpose, like Rulebook.running: on a hot reload of the script mitmproxy calls it synchronously.)"""
        logger.info(front_page.banner(self._doorway(), os.getpid()))

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        path = endpoint_of(flow)
        if path is None:
            return
        path = path.rstrip("/") or "/"
        flow.response = await self._answer(path, flow)
        flow.comment = f"clutch: answered {path} locally"

    async def _answer(self, path: str, flow: http.HTTPFlow) -> http.Response:
        """The endpoint's answer: 404 for a path that names none, or one whose addon is not loaded."""
        if path == "/breakers/reset" and self._resilience is not None:
            return self._reset_breakers(flow, self._resilience)
        if (path == "/rules" and flow.request.method not in ("GET", "HEAD")) or path == "/rules/state":
            return self._rules(path, flow)
        if path.startswith("/usage"):
            return await self._usage_report(path, flow.request.query)
        if path == "/" or path == "/docs" or path.startswith("/docs/"):
            return self._front_door(path, flow)
        if path == "/resilience" and self._resilience is not None:
            budgets = {"budgets": await _budgets(self._budget)} if self._budget is not None else {}
            return _json(200, {**self._resilience.snapshot(), **budgets})
        page = self._page(path, flow.request.query)
        if page is None:
            return _json(404, {"error": f"no Clutch endpoint at {path}", "endpoints": ENDPOINTS})
        return page

    def _page(self, path: str, query) -> http.Response | None:
        """The endpoints that only read what an addon holds; None when `path` is none of them (here)."""
        if path == "/metrics" and self._metrics is not None:
            state = self._resilience.snapshot() if self._resilience is not None else {}
            return http.Response.make(200, self._metrics.render(state.get("breakers"), state.get("quotas")),
                                      {"content-type": CONTENT_TYPE, "cache-control": "no-store"})
        if path == "/health":  # 503 while a team gateway cannot tell its users yet: a balancer looks elsewhere
            serving = self._credentials is None or self._credentials.serving()
            return _json(200 if serving else 503, self.health())
        if path == "/requests" and self._journal is not None:
            after = query.get("after", "0")
            return _json(200, self._journal.since(int(after) if after.isdigit() else 0))
        if path == "/rankings" and self._rankings is not None:
            return _json(200, self._rankings.snapshot())
        if path == "/dashboard":
            return http.Response.make(200, dashboard.page(), {"content-type": dashboard.CONTENT_TYPE,
                                                              "cache-control": "no-store"})
        if path == "/rules":
            return http.Response.make(200, rules_page.rules_html(), rules_page.headers())
        if path == "/ca.pem" and self._certs.files is not None:
            return http.Response.make(200, self._certs.files.ca_cert.read_bytes(),
                                      {"content-type": "application/x-pem-file"})
        return None

    def _front_door(self, path: str, flow: http.HTTPFlow) -> http.Response:
        """`/`: the links (HTML, JSON or text by Accept), relative to the entry the request came in on;
        `/docs/NAME.md`: a document of the checkout's docs/ (as plain text)."""
        if path != "/":
            text = front_page.document(path.removeprefix("/docs").lstrip("/"))
            if text is None:
                return _json(404, {"error": f"no document at {path}" if front_page.DOCS.is_dir() else
                                   "the documentation is the docs/ folder of Clutch's source"})
            return http.Response.make(200, text, {"content-type": front_page.TEXT, **front_page.PAGE_HEADERS})
        host, port = (flow.client_conn.sockname or ("127.0.0.1", 0))[:2]
        prefix = PREFIX if flow.request.path.startswith(PREFIX) else ""
        media = front_page.media_for(flow.request.headers.get("accept"))
        page = front_page.front_page(self._doorway(), media, f"http://{front_page.url_host(str(host))}:{port}", prefix)
        return http.Response.make(200, page, {"content-type": media, **front_page.PAGE_HEADERS})

    def _doorway(self) -> front_page.Doorway:
        """The proxy and base-URL entries that listen now, and the CA files."""
        proxy: list[tuple[str, int]] = []
        reverse: list[tuple[str, str, int]] = []
        for server in getattr(ctx.master.addons.get("proxyserver"), "servers", []):
            for address in server.listen_addrs:
                host, port = front_page.url_host(str(address[0])), int(address[1])
                if isinstance(server.mode, ReverseMode) and (server.mode.data, host, port) not in reverse:
                    reverse.append((server.mode.data, host, port))
                elif server.mode.type_name in ("regular", "upstream") and (host, port) not in proxy:
                    proxy.append((host, port))
        files = self._certs.files
        return front_page.Doorway(__version__, proxy, reverse, files.ca_cert if files else None,
                                  files.bundle if files else None, files.folder if files else None)

    def _reset_breakers(self, flow: http.HTTPFlow, resilience: Resilience) -> http.Response:
        """POST /breakers/reset {"target": "provider" | "provider:model"} ({} or no body: every target)."""
        request = flow.request
        refused = breaker_reset.reset_refusal(request.method, request.host_header, request.headers,
                                        is_loopback(flow.client_conn.peername))
        if refused is not None:
            status, why = refused
            logger.warning("refused a breaker reset from %s: %s", flow.client_conn.peername, why)
            return _json(status, {"error": why}, {"allow": "POST"} if status == 405 else None)
        try:
            target = breaker_reset.parse_body(request.raw_content or b"")
        except ValueError as e:
            return _json(400, {"error": str(e)})
        cleared = resilience.reset(target)
        logger.warning("breakers reset by hand (%s): cleared %s", target or "every target",
                       breaker_reset.describe_reset(cleared))
        answer = {"target": target, "cleared": cleared}
        provider = target.partition(":")[0] if target else None
        if provider and provider not in self._rulebook.rules.providers:
            answer["note"] = f"{provider!r} is not a provider in the rules in force"
        return _json(200, answer)

    def _rules(self, path: str, flow: http.HTTPFlow) -> http.Response:
        """GET /rules/state: the rules, the file, the keys' variables (never a value) and the token;
        POST /rules: a save (rules_page decides who may, and what it writes)."""
        rulebook = self._rulebook
        target = rules_page.save_target(rulebook.source)
        if path == "/rules/state":
            state = rules_page.page_state(target, rulebook.rules, rulebook.keys, rulebook.keys_path,
                                          rulebook.last_error, rulebook.overrides)
            return _json(200, {**state, "token": self._token})
        request = flow.request
        refused = rules_page.save_refusal(request.method, request.host_header, request.headers,
                                          is_loopback(flow.client_conn.peername), self._token)
        if refused is not None:
            status, why = refused
            logger.warning("refused a rules save from %s: %s", flow.client_conn.peername, why)
            return _json(status, {"error": why}, {"allow": "GET, POST"} if status == 405 else None)
        if target is None:
            return _json(409, {"error": "the gateway runs on the embedded defaults alone (--rules names them): "
                                        "start it without --rules to save a file of yours"})
        try:
            rules_page.save(target, rules_page.parse_save(request.raw_content or b""))
        except rules_page.SaveRefused as e:
            return _json(e.status, e.answer())
        except OSError as e:
            logger.error("rules page: cannot write %s: %s", target, e)
            return _json(500, {"error": f"cannot write {target}: {e.strerror or e}"})
        logger.warning("rules saved by the rules page to %s", target)
        try:
            rulebook.reload_now()
        except RulesError as e:
            return _json(200, {"saved": str(target), "in_force": False, "error": str(e)})
        return _json(200, {"saved": str(target), "in_force": True})

    async def _usage_report(self, path: str, query) -> http.Response:
        """GET /usage?by=agent&since=24h&until=... and /usage/timeline?bucket=3600&by=model&since=..."""
        usage = self._usage
        store = usage.store if usage is not None else None
        if usage is None or store is None:
            return _json(503, {"error": "usage records are off or their database could not be opened "
                                        "(see the gateway's log and the clutch_usage_db option)"})
        try:
            since, until = parse_time(query.get("since")), parse_time(query.get("until"))
            by = query.get("by") or None
            if path == "/usage":
                by = by or "agent"
                rows = await asyncio.to_thread(_flushed, usage, store.report, by, since, until)
                return _json(200, {"by": by, "since": since, "until": until, "rows": rows})
            if path == "/usage/timeline":
                bucket = int(query.get("bucket") or 3600)
                points = await asyncio.to_thread(_flushed, usage, store.timeline, bucket, by, since, until)
                return _json(200, {"bucket": bucket, "by": by, "since": since, "until": until, "points": points})
        except ValueError as e:
            return _json(400, {"error": str(e)})
        except UsageStoreError as e:  # a team's PostgreSQL that is away; the rows wait in the spool
            return _json(503, {"error": str(e)})
        return _json(404, {"error": f"no Clutch endpoint at {path}", "endpoints": ENDPOINTS})

    def health(self) -> dict:
        rulebook = self._rulebook
        # what keeps the gateway from doing all it should: it still serves, but someone should look
        problems = self._usage.problems() if self._usage is not None else []
        problems += self._resilience.problems() if self._resilience is not None else []
        problems += self._credentials.problems() if self._credentials is not None else []
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "version": __version__,
            "rules": {
                "path": str(rulebook.path),  # the user's file, or the embedded defaults when there is none
                "layers": [str(p) for p in rulebook.layers],
                "keys_file": str(rulebook.keys_path),
                "loaded_at": _iso(rulebook.loaded_at),
                "last_reload_error": rulebook.last_error,
                "providers": sorted(rulebook.rules.providers),
                # claude-code-proxy variables (BIG_MODEL, ROUTER_THINK, ...) that override the file
                "overrides": dict(rulebook.overrides),
                "tiers": rulebook.rules.tiers.model_dump(exclude_none=True),
                "routes": rulebook.rules.routes.model_dump(exclude_none=True),
                "profiles": sorted(rulebook.rules.profiles),
                "launch_tiers": dict(rulebook.rules.launch_tiers),
            },
            "started_at": _iso(self._started),
            "uptime_s": round(time.time() - self._started, 3),
            "listen": [f"{mode} {host}:{port}" for mode, host, port in listen_addresses()],
            "ca_cert": str(self._certs.files.ca_cert) if self._certs.files else None,
            "ca_bundle": str(self._certs.files.bundle) if self._certs.files else None,
            "pid": os.getpid(),
            # a file, or a PostgreSQL URL without its password
            "usage_db": self._usage.store.name if self._usage is not None and self._usage.store else None,
            "lost_in_flight": self._shutdown.health() if self._shutdown is not None else None,
        }


def endpoint_of(flow: http.HTTPFlow) -> str | None:
    """Which of Clutch's endpoints the flow asks for (None: none). Here BrowserGate has already refused
    the flows a web page could have sent, and every foreign Host; Credentials guards them on a team
    gateway."""
    request = flow.request
    listen = [(host, port) for _, host, port in listen_addresses()]
    return local_path(request.path, request.host, request.port, ctx.options.clutch_host, listen)


def listen_addresses() -> list[tuple[str, str, int]]:
    proxyserver = ctx.master.addons.get("proxyserver")
    found = []
    for server in getattr(proxyserver, "servers", []):
        for address in server.listen_addrs:
            found.append((server.mode.type_name, str(address[0]), int(address[1])))
    return found


def _json(status: int, payload: dict, headers: dict | None = None) -> http.Response:
    return http.Response.make(status, json.dumps(payload, indent=2).encode() + b"\n",
                              {"content-type": "application/json", "cache-control": "no-store", **(headers or {})})


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


async def _budgets(budget: Budget) -> dict:
    """Today's budgets, read from the usage store first if no request did yet (e.g. budgets a
    reload just added); a store that cannot be read leaves `seeded` false."""
    if budget.book.active:
        with contextlib.suppress(SpendingUnknown):
            await budget.ready()
    return budget.snapshot()


def _flushed(usage: Usage, query, *args):
    usage.flush()  # the latest requests are in the report
    return query(*args)
