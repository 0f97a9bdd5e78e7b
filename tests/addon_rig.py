"""Clutch's addons in-process, for the fast loop's addon tests (tests/addons/): no process is started.

`running` loads the addon list of addons/clutch.py (make_addons: the real classes, wired as mitmdump
loads them) into mitmproxy's test master (mitmproxy.test.taddons), with a temporary confdir, state
folder and rules, and runs its real lifecycle: configure with every option, running, and done at the
end. `Rig.send` takes a flow (`llm_flow` builds one with tflow) through the hooks in mitmproxy's own
order, through mitmproxy's AddonManager, which, as in mitmdump, logs an exception an addon's hook
raises ("Addon error") and goes on with the next addon and the upstream leg.

Between the hooks, mitmproxy's proxy core connects to the address the request hooks left and
exchanges the request and the answer; `Rig.send` does that with httpx, for a flow the Engine took (its
request then points at the engine's loopback server): a flow no addon answered or took would go to
the provider itself, which `send` refuses. The provider behind the engine is
tests/fake_upstream.py's FakeUpstream, serving TLS for every provider host in the test's own event
loop (`clutch_resolve` sends the engine there, as the gateway tests do with the fake's process).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import mitmproxy.options
from harness import PROVIDER_HOSTS
from mitmproxy import flow as mflow
from mitmproxy import hooks, http
from mitmproxy.proxy.layers.http import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow, tutils


def llm_flow(url: str, body: dict | bytes, *, user: str | None = None, method: str = "POST",
             headers: dict[str, str] | None = None) -> http.HTTPFlow:
    """The agent's request as mitmproxy hands it to the addons: to `url`, sent through the proxy as
    `user` (the proxy credentials xx gives an agent, e.g. "xx-cip" for Claude Code; None: none), a
    JSON body with its Content-Length, stamped now (the usage rows and budgets count by day)."""
    target = httpx.URL(url)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    fields = [(b"host", target.host.encode()), (b"content-type", b"application/json"),
              (b"content-length", str(len(content)).encode())]
    if user is not None:
        fields.append((b"proxy-authorization", b"Basic " + base64.b64encode(f"{user}:token".encode())))
    fields += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    now = time.time()
    request = tutils.treq(host=target.host, port=target.port or 443, scheme=target.scheme.encode(),
                          authority=b"", path=target.raw_path, method=method.encode(),
                          headers=http.Headers(fields), content=content, timestamp_start=now, timestamp_end=now)
    return tflow.tflow(req=request)


def local_flow(path: str, *, host: str = "clutch.local", port: int = 80, method: str = "GET",
               headers: dict[str, str] | None = None, body: bytes = b"",
               entry: tuple[str, int] = ("127.0.0.1", 8780)) -> http.HTTPFlow:
    """A plain-HTTP request for `host:port` with its Host header, by default Clutch's reserved name
    through the proxy (`curl -x 127.0.0.1:8780 http://clutch.local/health`); `entry` is the address
    the client connected to (the listen address)."""
    fields = [(b"host", f"{host}:{port}".encode())] + [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if body:
        fields.append((b"content-length", str(len(body)).encode()))
    now = time.time()
    request = tutils.treq(host=host, port=port, scheme=b"http", authority=b"", path=path.encode(),
                          method=method.encode(), headers=http.Headers(fields), content=body,
                          timestamp_start=now, timestamp_end=now)
    client = tflow.tclient_conn()
    client.sockname = entry
    return tflow.tflow(client_conn=client, req=request)


class Rig:
    """A running in-process Clutch: its addons under mitmproxy's test master."""

    def __init__(self, tctx: taddons.context, workdir: Path):
        self.tctx = tctx
        self.master = tctx.master
        self.workdir = workdir

    def addon(self, name: str):
        """One of Clutch's addons by its class name in lower case ("engine", "usage", ...)."""
        found = self.master.addons.get(name)
        assert found is not None, f"no addon {name!r}"
        return found

    async def hook(self, event: hooks.Hook) -> None:
        await self.master.addons.handle_lifecycle(event)

    async def request_hooks(self, flow: http.HTTPFlow) -> None:
        """The hooks mitmproxy runs before it sends a request on: requestheaders, then request."""
        await self.hook(HttpRequestHeadersHook(flow))
        await self.hook(HttpRequestHook(flow))

    async def send(self, flow: http.HTTPFlow, timeout: float = 30) -> bytes:
        """Take `flow` through its hooks and the upstream leg as mitmproxy does; the bytes its agent
        receives (the answer an addon set, or what the loopback server streamed)."""
        await self.request_hooks(flow)
        return await self.finish(flow, timeout)

    async def finish(self, flow: http.HTTPFlow, timeout: float = 30) -> bytes:
        """The rest of `send`, after the request hooks: the upstream leg, then the response hooks."""
        if flow.response is not None:  # set by an addon: mitmproxy emulates the responseheaders hook
            flow.response.timestamp_start = time.time()
            await self.hook(HttpResponseHeadersHook(flow))
            body = flow.response.raw_content or b""
            flow.response.timestamp_end = time.time()
            await self.hook(HttpResponseHook(flow))
            return body
        request = flow.request
        assert self.addon("engine").took(flow), f"no addon answered or took {request.pretty_url}"
        url = f"{request.scheme}://{request.host}:{request.port}{request.path}"
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
                async with client.stream(request.method, url, headers=list(request.headers.fields),
                                         content=request.raw_content or b"") as answer:
                    flow.response = http.Response(b"HTTP/1.1", answer.status_code, answer.reason_phrase.encode(),
                                                  http.Headers(answer.headers.raw), None, None, time.time(), None)
                    await self.hook(HttpResponseHeadersHook(flow))
                    body = b"".join([piece async for piece in answer.aiter_raw()])
        except httpx.HTTPError as e:  # the server leg failed: mitmproxy's error hook
            flow.error = mflow.Error(f"{type(e).__name__}: {e}")
            await self.hook(HttpErrorHook(flow))
            return b""
        if not flow.response.stream:
            flow.response.raw_content = body
        flow.response.timestamp_end = time.time()
        await self.hook(HttpResponseHook(flow))
        return body


def provider_options(fake_port: int, ca_cert: Path) -> dict:
    """Send the engine to the fake provider for every provider host, trusting its test CA."""
    return {"clutch_resolve": [f"{host}:443=127.0.0.1:{fake_port}" for host in PROVIDER_HOSTS],
            "ssl_verify_upstream_trusted_ca": str(ca_cert)}


@contextlib.asynccontextmanager
async def running(workdir: Path, rules: str | None = None, without: tuple[str, ...] = (),
                  **options) -> AsyncIterator[Rig]:
    """Clutch's addons, configured and running in this event loop: confdir, state folder (usage.db)
    and rules file (`rules`, else the embedded default) under `workdir`; `options` set the rest.
    `without` leaves addons out by name ("route": no routing, as when the Route addon is not loaded)."""
    from addons.clutch import make_addons

    workdir.mkdir(parents=True, exist_ok=True)
    core = {"confdir": str(workdir / "certs"), "listen_host": "127.0.0.1"}
    # a test that fails between the hooks leaves its flow in flight: the shutdown does not wait for it
    clutch = {"clutch_state_dir": str(workdir / "state"), "clutch_drain_timeout_ms": 0}
    if rules is not None:
        (workdir / "rules.yaml").write_text(rules)
        clutch["clutch_rules"] = str(workdir / "rules.yaml")
    for name, value in options.items():
        (clutch if name.startswith("clutch_") else core)[name] = value
    chosen = mitmproxy.options.Options()
    chosen.update(**core)
    chosen.update_defer(**clutch)  # defined once the addons load
    addons = [addon for addon in make_addons() if type(addon).__name__.lower() not in without]
    with taddons.context(*addons, options=chosen) as tctx:
        for addon in addons:  # what mitmdump does at start: every option is new to every addon
            tctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(tctx.options.keys())))
        await tctx.master.addons.trigger_event(hooks.RunningHook())
        try:
            yield Rig(tctx, workdir)
        finally:
            await tctx.master.addons.trigger_event(hooks.DoneHook())
