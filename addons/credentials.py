"""Credentials: on a team gateway (`clutch_users`), every agent is a user, known by its token.

The token (`clutch users add NAME`, guard/user_tokens.py) is the password of the agent's proxy URL. A
CONNECT, or a plain-HTTP proxy request, without a token that works gets 407 Proxy Authentication
Required, before any byte of the agent's reaches a provider; with one, the connection's requests carry
the user (Identify puts it in the identity: usage rows, /requests), and the agent's own provider
credentials are replaced by the gateway's from the rules, so no key of an agent's ever reaches a
provider and no agent needs one. A provider whose key the gateway lacks gets nothing: the agent gets a
502 in its dialect that names the missing variable. One the rules give no key (a local Ollama) gets
the request without any.

The tokens that work are read from the usage database (PostgreSQL, accounting/postgres.py: only the
SHA-256 of each) by a thread, never on the event loop's time: at start, every REFRESH_S while the
gateway runs (revoking a user takes effect within that), and at once when a token is not known yet
(a user just added), at most every MISS_REFRESH_S however many unknown tokens arrive: an unknown token
waits for that read (2 s at most), then gets its answer. While the
database is away the tokens already read keep working; if none could ever be read, nothing is served
(fail closed) and /health says why.

A base-URL (reverse) entry carries no proxy password: on a team gateway it answers 403 and says to use
HTTPS_PROXY. The gateway's own endpoints (/health, which HAProxy's checks read, /usage, ...) are not
behind tokens yet (docs/team.md, Not yet).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.proxy.mode_specs import ReverseMode

from addons.accounting.postgres import is_postgres_url
from addons.endpoints import listen_addresses
from addons.guard.browser_guard import local_path
from addons.guard.user_tokens import is_token, proxy_password, token_hash
from addons.option_check import refuse
from addons.routing.plan import AUTH_HEADERS, auth_headers
from addons.rulebook import Rulebook
from addons.usage import Usage
from addons.wire import dialects

logger = logging.getLogger(__name__)

REFRESH_S = 30.0
MISS_REFRESH_S = 2.0
READ_TIMEOUT_S = 5.0
USER = "clutch.user"  # flow metadata: the user of a plain-HTTP proxy request (a tunnel's is per connection)


class Credentials:
    def __init__(self, rulebook: Rulebook, usage: Usage):
        self._rulebook = rulebook
        self._usage = usage
        self._directory: dict[str, dict[str, Any]] = {}  # token SHA-256 -> user
        self._read_at: float | None = None  # monotonic time of the last read that answered
        self._tried_at: float | None = None  # of the last read, answered or not
        self._reading: asyncio.Future | None = None
        self._after_miss: asyncio.Future | None = None
        self._by_connection: dict[str, str] = {}
        self.problem: str | None = None  # why the tokens could not be read (for /health)

    def load(self, loader):
        loader.add_option("clutch_users", bool, False,
                          "Team gateway: every agent's proxy password must be a user's token (clutch users "
                          "add), else 407; the user is in usage, budgets and /requests, and providers get "
                          "the gateway's keys only. Needs clutch_usage_db=postgresql://..., where the "
                          "users are.")

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

    def problems(self) -> list[str]:
        return [self.problem] if ctx.options.clutch_users and self.problem else []

    # ------------------------------------------------------------ hooks

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if not ctx.options.clutch_users or flow.response is not None:
            return
        user = await self._user_for(flow.request.headers.get("proxy-authorization"))
        if user is None:
            flow.response = self._refusal()
            return
        self._by_connection[flow.client_conn.id] = user

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not ctx.options.clutch_users or flow.response is not None:
            return
        user = self._by_connection.get(flow.client_conn.id)
        if user is None:
            if isinstance(flow.client_conn.proxy_mode, ReverseMode):
                flow.response = http.Response.make(
                    403, b"Clutch: this is a team gateway; a base-URL entry carries no user token. Use "
                         b"HTTPS_PROXY=http://USER:TOKEN@gateway:port (xx sets it from its config's token).\n",
                    {"content-type": "text/plain"})
                return
            if self._is_local(flow):
                return  # the gateway's own endpoints (docs/team.md: not behind tokens yet)
            user = await self._user_for(flow.request.headers.get("proxy-authorization"))
            if user is None:
                flow.response = self._refusal()
                return
            flow.metadata[USER] = user
        self._central_keys(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self._by_connection.pop(client.id, None)

    def user_of(self, flow: http.HTTPFlow) -> str | None:
        """The user who sent `flow` (None: not a team gateway, or one of its own endpoints)."""
        return self._by_connection.get(flow.client_conn.id) or flow.metadata.get(USER)

    # ------------------------------------------------------------ the tokens

    async def _user_for(self, header: str | None) -> str | None:
        token = proxy_password(header)
        if not is_token(token):
            return None
        digest = token_hash(token or "")
        if self._stale(REFRESH_S) and self._directory:
            self._start_read()  # the next requests see it; this one goes on with what is known
        found = self._directory.get(digest)
        if found is None:  # a user added since the last read, or a token that never worked
            await self._read_after_miss()
            found = self._directory.get(digest)
        return found["name"] if found else None

    def _stale(self, age_s: float, tried: bool = False) -> bool:
        at = self._tried_at if tried else self._read_at
        return at is None or time.monotonic() - at >= age_s

    def _start_read(self) -> asyncio.Future:
        if self._reading is None or self._reading.done():
            self._tried_at = time.monotonic()
            self._reading = asyncio.ensure_future(self._read_directory())
        return self._reading

    async def _read_after_miss(self) -> None:
        """One read of the tokens for every unknown token that arrives together, and never sooner than
        MISS_REFRESH_S after the last: a flood of made-up tokens costs the database one read in 2 s."""
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
            directory = await asyncio.wait_for(asyncio.to_thread(reader), READ_TIMEOUT_S)
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

    # ------------------------------------------------------------ answers

    @staticmethod
    def _refusal() -> http.Response:
        return http.Response.make(
            407, b"Clutch: this team gateway needs your user token as the proxy password "
                 b"(http://NAME:TOKEN@gateway:port); ask its admin for one (clutch users add).\n",
            {"proxy-authenticate": 'Basic realm="Clutch"', "content-type": "text/plain"})

    def _central_keys(self, flow: http.HTTPFlow) -> None:
        """The agent's provider credentials out, the gateway's in (for a provider of the rules)."""
        request = flow.request
        found = self._rulebook.rules.provider_at(request.host, request.port)
        for header_name in AUTH_HEADERS:
            request.headers.pop(header_name.decode(), None)
        if "key" in request.query:
            del request.query["key"]  # Gemini's ?key=
        if found is None:
            return
        name, provider = found
        variable = provider.key_variable
        key = (self._rulebook.keys.get(variable) or "").strip() if variable else ""
        if key:
            for header, value in auth_headers(provider, key, request.path):
                request.headers[header.decode()] = value.decode("latin-1")
        elif variable:  # the provider wants a key the gateway lacks: said now, in the agent's dialect
            dialect = dialects.recognise(request.method, request.path, request.headers)
            message = (f"this team gateway has no key for provider {name} (${variable} is set neither in its "
                       f"environment nor in its keys file); ask its admin")
            flow.response = http.Response.make(502, dialects.error_body(dialect, 502, message),
                                               {"content-type": "application/json", "x-clutch-error": "missing_key"})

    @staticmethod
    def _is_local(flow: http.HTTPFlow) -> bool:
        request = flow.request
        listen = [(host, port) for _, host, port in listen_addresses()]
        return local_path(request.path, request.host, request.port, ctx.options.clutch_host, listen) is not None
