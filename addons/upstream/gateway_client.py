"""Requests that Clutch sends through its own proxy port, as an agent would: CONNECT, then TLS with the
gateway's CA, so each one is an ordinary flow that every addon sees (identity, classification,
compression, routing, budgets, the engine's cascade and translation, usage, the journal, mitmweb).

No mitmproxy here. Used for the turns of the Responses WebSockets Clutch answers (socket_session.py):
one aiohttp session, whose pool keeps tunnels per target and per proxy credentials, so turns of one
agent reuse their connection and never share one with another agent's identity.

No read timeout of its own: the engine bounds every upstream attempt and its cascade, and a turn ends
with its socket (the client's close cancels it).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp

from addons.upstream.socket_session import Unreachable

CONNECT_TIMEOUT_S = 10.0


class _Answer:
    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.headers.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError) as e:
            raise Unreachable(f"the gateway's answer broke off: {e}") from e


class GatewayClient:
    def __init__(self, proxy_url: str, ca_file: Path):
        self.proxy_url = proxy_url
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def post(self, url: str, headers: Sequence[tuple[str, str]], body: bytes,
                   proxy_authorization: str | None) -> AsyncIterator[_Answer]:
        """POST `body` to `url` through the gateway; leaving the block before the answer's end (or by
        cancellation) closes its connection, which the gateway sees as the agent going away."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._context), trust_env=False, auto_decompress=True,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=None))
        proxy_headers = {"Proxy-Authorization": proxy_authorization} if proxy_authorization else None
        try:
            response = await self._session.post(url, data=body, headers=list(headers), proxy=self.proxy_url,
                                                 proxy_headers=proxy_headers, allow_redirects=False)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise Unreachable(str(e) or type(e).__name__) from e
        try:
            yield _Answer(response)
        finally:
            if response.content.at_eof():
                response.release()  # the connection goes back to the pool
            else:
                response.close()  # left early: the gateway sees the agent go away

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
