"""Credentials: on a team gateway (`clutch_users`), every agent is a user, known by its token.

The token (`clutch users add NAME`, guard/user_tokens.py) is the password of the agent's proxy URL. A
CONNECT, or a plain-HTTP proxy request, without a token that works gets 407 Proxy Authentication
Required before any byte of the agent's reaches a provider. With one, each request of the connection
is checked again (a removed user's open connection gets 403 from then on) and carries the user (Identify
puts it in the identity: usage rows, /requests). What may reach a provider is narrowed to what an agent
needs, over TLS only: generating calls, token counts and model lists; anything else on a provider's
host (files, batches, fine-tuning, ...) gets 403, and Codex's WebSocket gets 426, so it uses HTTPS.
The agent's own provider credentials are replaced by the gateway's from the rules, so no key of an
agent's ever reaches a provider and no agent needs one. A provider whose key the gateway lacks gets
nothing: the agent gets a 502 in its dialect that names the missing variable.

The gateway's own endpoints: GET /health stays open (HAProxy's checks read it, and it answers 503
until the tokens could be read once); the other reads need a user's token (as the proxy password, or
`Authorization: Bearer`); writes (the rules page, breaker resets) are refused. Behind a balancer on the
same host every client looks like loopback, so loopback earns nothing here.

The tokens that work are read from the usage database (PostgreSQL, accounting/postgres.py: only the
SHA-256 of each) by a thread of its own on a connection of its own, never on the event loop's time:
at start, every REFRESH_S, and when a token arrives that is not known (a user just added), at most once
every MISS_REFRESH_S however many unknown tokens arrive; such a request waits for that read. One read
at a time, however long the database takes. While the database is away the tokens already read keep
working.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.proxy.mode_specs import ReverseMode

from addons.accounting.postgres import is_postgres_url
from addons.endpoints import endpoint_of
from addons.guard.user_tokens import is_token, proxy_password, token_hash
from addons.option_check import refuse
from addons.routing.plan import AUTH_HEADERS, auth_headers
from addons.rulebook import Rulebook
from addons.usage import Usage
from addons.wire import dialects

logger = logging.getLogger(__name__)

REFRESH_S = 30.0
MISS_REFRESH_S = 2.0
OPEN_ENDPOINTS = frozenset({"/health"})
USER = "clutch.user"  # flow metadata: the user who sent the flow


class Credentials:
    def __init__(self, rulebook: Rulebook, usage: Usage):
        self._rulebook = rulebook
        self._usage = usage
        self._directory: dict[str, dict[str, Any]] = {}  # token SHA-256 -> user
        self._read_at: float | None = None  # monotonic time of the last read that answered
        self._tried_at: float | None = None  # of the last read started
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clutch-tokens")
        self._reading: asyncio.Future | None = None
        self._after_miss: asyncio.Future | None = None
        self._refresher: asyncio.Task | None = None
        self._by_connection: dict[str, str] = {}  # client connection id -> its token's SHA-256
        self.problem: str | None = None  # why the tokens could not be read (for /health)
        self._users_listeners: list[Callable[[dict[str, float | None]], None]] = []

    def load(self, loader):
        loader.add_option("clutch_users", bool, False,
                          "Team gateway: every agent's proxy password must be a user's token (clutch users "
                          "add), else 407; the user is in usage and /requests, providers get the gateway's "
                          "keys only, and Clutch's endpoints need a token. Needs "
                          "clutch_usage_db=postgresql://..., where the users are.")

    def configure(self, updated):
        if updated & {"clutch_users", "clutch_allow_remote"} and ctx.options.clutch_allow_remote \
                and not ctx.options.clutch_users:
            # other machines reach the gateway that holds the keys: only as users with tokens
            refuse("clutch_allow_remote serves other machines, which needs a team gateway that checks tokens: "
                   "set clutch_users too (docs/team.md)")
        if updated & {"clutch_users", "clutch_usage_db"}:
            if ctx.options.clutch_users and not is_postgres_url(ctx.options.clutch_usage_db):
                refuse("clutch_users needs clutch_usage_db=postgresql://... (the users and their tokens are in "
                       "the team's database)")
            self._directory, self._read_at, self._tried_at, self.problem = {}, None, None, None
            self._tell_users()

    def on_users(self, listener: Callable[[dict[str, float | None]], None]) -> None:
        """`listener({user: daily budget in US dollars, or None})` after each read of the users."""
        self._users_listeners.append(listener)

    def _tell_users(self) -> None:
        budgets = {user["name"]: user.get("budget_usd_day") for user in self._directory.values()}
        for listener in self._users_listeners:
            listener(budgets)

    def running(self):
        self._refresher = asyncio.ensure_future(self._refresh_every())

    def done(self):
        if self._refresher is not None:
            self._refresher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def problems(self) -> list[str]:
        return [self.problem] if ctx.options.clutch_users and self.problem else []

    def serving(self) -> bool:
        """False while a team gateway has never read the tokens: /health answers 503, so a balancer sends
        agents to a replica that can tell who they are."""
        return not ctx.options.clutch_users or self._read_at is not None

    # ------------------------------------------------------------ hooks

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if not ctx.options.clutch_users or flow.response is not None:
            return
        digest = await self._known(flow.request.headers.get("proxy-authorization"))
        if digest is None:
            flow.response = _refusal()
            return
        self._by_connection[flow.client_conn.id] = digest

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not ctx.options.clutch_users or flow.response is not None:
            return
        digest = self._by_connection.get(flow.client_conn.id)
        endpoint = endpoint_of(flow)  # Clutch's own, on any entry (its path prefix works inside a tunnel too)
        if endpoint is not None:
            await self._guard_endpoint(flow, endpoint, digest)
            return
        if digest is None:
            if isinstance(flow.client_conn.proxy_mode, ReverseMode):
                flow.response = _plain(403, "this is a team gateway; a base-URL entry carries no user token. Use "
                                            "HTTPS_PROXY=http://USER:TOKEN@gateway:port (xx sets it from its "
                                            "config's token).")
                return
            digest = await self._known(flow.request.headers.get("proxy-authorization"))
            if digest is None:
                flow.response = _refusal()
                return
        user = self._directory.get(digest)
        if user is None:  # removed since this connection was opened
            dialect = dialects.recognise(flow.request.method, flow.request.path, flow.request.headers)
            flow.response = _error(dialect, 403, "your Clutch user token no longer works on this team gateway")
            return
        flow.metadata[USER] = user["name"]
        self._central_keys(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self._by_connection.pop(client.id, None)

    def user_of(self, flow: http.HTTPFlow) -> str | None:
        """The user who sent `flow` (None: not a team gateway, or one of its own endpoints)."""
        return flow.metadata.get(USER)

    # ------------------------------------------------------------ the tokens

    async def _known(self, header: str | None) -> str | None:
        """The SHA-256 of the token in a Proxy-Authorization value when it works now, else None."""
        return await self._working(proxy_password(header))

    async def _working(self, token: str | None) -> str | None:
        if not is_token(token):
            return None
        digest = token_hash(token or "")
        if digest not in self._directory:  # a user added since the last read, or a token that never worked
            await self._read_after_miss()
        return digest if digest in self._directory else None

    async def _refresh_every(self) -> None:
        while True:
            if ctx.options.clutch_users:
                with contextlib.suppress(Exception):  # the read says what went wrong (problem, log)
                    await self._start_read()
            await asyncio.sleep(REFRESH_S)  # a schedule, not a wait for an event

    def _start_read(self) -> asyncio.Future:
        """The read running now, or a new one: never two at once, however long the database takes."""
        if self._reading is None or self._reading.done():
            self._tried_at = time.monotonic()
            self._reading = asyncio.ensure_future(self._read_directory())
        return self._reading

    async def _read_after_miss(self) -> None:
        """One read of the tokens for every unknown token that arrives together, and never sooner than
        MISS_REFRESH_S after the last one started: a flood of made-up tokens costs the database one
        read in 2 s."""
        if self._after_miss is None or self._after_miss.done():
            since = time.monotonic() - self._tried_at if self._tried_at is not None else MISS_REFRESH_S
            self._after_miss = asyncio.ensure_future(self._read_in(max(0.0, MISS_REFRESH_S - since)))
        await asyncio.shield(self._after_miss)

    async def _read_in(self, delay_s: float) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)  # the rate limit on reads, not a wait for an event
        await self._start_read()

    async def _read_directory(self) -> None:
        store = self._usage.store
        reader = getattr(store, "token_directory", None)
        if store is None or reader is None:
            self.problem = "clutch_users: the usage database is not open, so no token can be checked"
            return
        try:
            directory = await asyncio.get_running_loop().run_in_executor(self._executor, reader)
        except Exception as e:  # away, slow, a schema without users: the tokens known so far keep working
            why = str(e) or type(e).__name__
            if self.problem is None:
                logger.warning("clutch_users: cannot read the users' tokens (%s); %s", why,
                               f"the {len(self._directory)} known keep working" if self._directory
                               else "no agent can be served until it can")
            self.problem = f"clutch_users: cannot read the users' tokens: {why}"
            return
        if self.problem is not None or self._read_at is None:
            logger.info("clutch_users: %d users' tokens read from %s", len(directory), store.name)
        self._directory, self._read_at, self.problem = directory, time.monotonic(), None
        self._tell_users()

    # ------------------------------------------------------------ the gateway's own endpoints

    async def _guard_endpoint(self, flow: http.HTTPFlow, path: str, tunnel: str | None) -> None:
        """Reads with a user's token (a bearer, Basic's password, the proxy password, or the tunnel's),
        /health without; no writes at all."""
        request = flow.request
        if request.method not in ("GET", "HEAD"):
            flow.response = _plain(403, "on a team gateway Clutch's endpoints are read-only: change the rules "
                                        "in their file on the gateway's host")
        elif path.split("?", 1)[0] in OPEN_ENDPOINTS or (tunnel is not None and tunnel in self._directory):
            return
        else:
            authorization = request.headers.get("authorization", "")
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                token = value.strip()
            elif scheme.lower() == "basic":  # a browser, after the challenge below: any name, the token as password
                token = proxy_password(authorization)
            else:
                token = proxy_password(request.headers.get("proxy-authorization"))
            if await self._working(token) is None:
                # Basic: a browser asks its user (the dashboard: any name, the token as the password) and
                # then sends it with the page's own requests; tools send Authorization: Bearer TOKEN
                flow.response = _plain(401, "this team gateway's endpoints need a user token: "
                                            "Authorization: Bearer TOKEN (a browser: any name, the token as "
                                            "the password)",
                                       {"www-authenticate": 'Basic realm="Clutch team gateway", charset="UTF-8"'})

    # ------------------------------------------------------------ what reaches a provider

    def _central_keys(self, flow: http.HTTPFlow) -> None:
        """Only what an agent needs, over TLS, with the gateway's key in place of the agent's."""
        request = flow.request
        rules = self._rulebook.rules
        found = rules.provider_at(request.host, request.port)
        for header_name in AUTH_HEADERS:
            request.headers.pop(header_name.decode(), None)
        if "key" in request.query:
            del request.query["key"]  # Gemini's ?key=
        dialect = dialects.recognise(request.method, request.path, request.headers)
        # keys never cross a network in clear: plain HTTP only to a provider whose base URL is http://
        plain_provider = found is not None and found[1].base_url.startswith("http://")
        if request.scheme != "https" and not plain_provider:
            flow.response = _error(dialect, 403, "a team gateway forwards plain HTTP only to the rules' providers "
                                                 "whose base URL is http:// (a local Ollama)")
            return
        if found is None:
            return
        if dialects.is_responses_websocket(request.method, request.path, request.headers):
            flow.response = _plain(426, "a team gateway serves Codex's Responses over HTTPS, not a WebSocket")
            return
        if not (dialect is not None or _allowed_other(request.method, request.path)):
            flow.response = _error(dialect, 403, f"a team gateway passes model calls only: not "
                                                 f"{request.method} {request.path.split('?', 1)[0][:200]}")
            return
        name, provider = found
        variable = provider.key_variable
        key = (self._rulebook.keys.get(variable) or "").strip() if variable else ""
        if key:
            for header, value in auth_headers(provider, key, request.path):
                request.headers[header.decode()] = value.decode("latin-1")
        elif variable:  # the provider wants a key the gateway lacks: said now, in the agent's dialect
            flow.response = _error(dialect, 502, f"this team gateway has no key for provider {name} (${variable} "
                                                 f"is set neither in its environment nor in its keys file); "
                                                 f"ask its admin")
            flow.response.headers["x-clutch-error"] = "missing_key"


def _allowed_other(method: str, path: str) -> bool:
    """Besides generating calls: model lists and token counts, which agents call on their own."""
    path = path.split("?", 1)[0].rstrip("/")
    if method in ("GET", "HEAD"):
        parts = path.split("/")
        return "models" in parts[-2:]
    return method == "POST" and (path.endswith("/count_tokens") or path.endswith(":countTokens"))


def _refusal() -> http.Response:
    return _plain(407, "this team gateway needs your user token as the proxy password "
                       "(http://NAME:TOKEN@gateway:port); ask its admin for one (clutch users add).",
                  {"proxy-authenticate": 'Basic realm="Clutch"'})


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> http.Response:
    return http.Response.make(status, f"Clutch: {message}\n".encode(),
                              {"content-type": "text/plain", **(headers or {})})


def _error(dialect, status: int, message: str) -> http.Response:
    return http.Response.make(status, dialects.error_body(dialect, status, f"Clutch: {message}"),
                              {"content-type": "application/json"})
