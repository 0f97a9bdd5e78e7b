"""Stopping a real gateway while it streams: SIGTERM lets the streams that fit in the grace finish, ends
the rest with a well-formed error event the SDKs raise as an APIError, refuses new work, books every
request in the usage store and exits soon after the grace. After `kill -9`, the next start says how
many requests were lost in flight."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import anthropic
import httpx
import httpx2
import openai
from harness import Gateway, trust

from addons.wire.identity import Identity, username_for
from addons.accounting.store import UsageStore

GRACE_MS = 3000
SHORT = "chunks-15-delay-100"  # 1.5 s: finishes within the grace
LONG = "chunks-600-delay-100"  # 60 s: does not


def start(workdir, fake, pki, *options: str) -> Gateway:
    return Gateway(workdir, fake.port, pki.ca_cert, "--set", f"clutch_state_dir={workdir / 'state'}", *options)


class Streams:
    """Streams from the openai and anthropic SDKs, each in a thread, each reporting its first token."""

    def __init__(self, gateway: Gateway, tag: str):
        self.gateway, self.tag = gateway, tag
        self.first: list[threading.Event] = []
        self.results: dict[str, tuple[str, str]] = {}  # model -> ("done", text) | ("error", message)
        self.threads: list[threading.Thread] = []

    def _client_args(self):
        proxy = self.gateway.proxy_url(username_for(Identity(agent="opencode", session=self.tag)))
        return httpx2.Client(proxy=proxy, verify=trust(self.gateway.ca_cert), timeout=90)

    def openai(self, model: str) -> None:
        def run(first: threading.Event):
            client = openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key="sk-or-v1-agent", max_retries=0,
                                   http_client=self._client_args())
            text = ""
            try:
                for chunk in client.chat.completions.create(model=model, stream=True,
                                                            messages=[{"role": "user", "content": "hi"}]):
                    if chunk.choices and chunk.choices[0].delta.content:
                        text += chunk.choices[0].delta.content
                        first.set()
                self.results[model] = ("done", text)
            except openai.APIError as e:
                self.results[model] = ("error", str(e))
            except Exception as e:  # a reset, a hang cut by the timeout: not what the agent should see
                self.results[model] = ("broken", repr(e))
            finally:
                first.set()
        self._start(run)

    def anthropic(self, model: str) -> None:
        def run(first: threading.Event):
            client = anthropic.Anthropic(api_key="sk-ant-api03-agent", max_retries=0, http_client=self._client_args())
            text = ""
            try:
                with client.messages.stream(model=model, max_tokens=64,
                                            messages=[{"role": "user", "content": "hi"}]) as stream:
                    for piece in stream.text_stream:
                        text += piece
                        first.set()
                self.results[model] = ("done", text)
            except anthropic.APIError as e:
                self.results[model] = ("error", str(e))
            except Exception as e:
                self.results[model] = ("broken", repr(e))
            finally:
                first.set()
        self._start(run)

    def _start(self, run) -> None:
        first = threading.Event()
        self.first.append(first)
        thread = threading.Thread(target=run, args=(first,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def wait_first(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for event in self.first:
            assert event.wait(max(0.0, deadline - time.monotonic())), "a stream never started"

    def join(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "a stream hangs"


def refused(port: int, timeout: float = 10) -> bool:
    """Whether new connections to `port` are refused, within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def rows(workdir) -> list[dict]:
    store = UsageStore(workdir / "state" / "usage.db")
    try:
        return store.rows()
    finally:
        store.close()


def test_sigterm_drains_streams_and_books_them(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, "--set", f"clutch_drain_timeout_ms={GRACE_MS}")
    streams = Streams(gateway, "drain")
    short = [f"drain/o{i}-{SHORT}" for i in range(3)]
    long = [f"drain/p{i}-{LONG}" for i in range(3)]
    claude_short, claude_long = f"drain-c0-{SHORT}", f"drain-c1-{LONG}"
    for model in short + long:
        streams.openai(model)
    streams.anthropic(claude_short)
    streams.anthropic(claude_long)
    # a client with an open connection (a tunnel) that sends a new request once the gateway stops
    keep = httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=30)
    assert keep.post("https://openrouter.ai/api/v1/chat/completions", headers={"authorization": "Bearer k"},
                     json={"model": "drain/before", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    streams.wait_first()
    stopped_at = time.monotonic()
    os.kill(gateway.process.pid, signal.SIGTERM)
    assert refused(gateway.port)  # the listener is closed at once
    late = keep.post("https://openrouter.ai/api/v1/chat/completions", headers={"authorization": "Bearer k"},
                     json={"model": "drain/late", "messages": [{"role": "user", "content": "x"}]})
    assert late.status_code == 503 and late.headers["x-clutch-error"] == "shutting_down"
    assert "Clutch is shutting down" in late.json()["error"]["message"]
    keep.close()
    streams.join()
    code = gateway.process.wait(timeout=GRACE_MS / 1000 + 15)
    exit_s = time.monotonic() - stopped_at
    gateway.log.close()
    assert code == 0, gateway.output()
    assert exit_s < GRACE_MS / 1000 + 6, exit_s

    for model in [*short, claude_short]:
        outcome, text = streams.results[model]
        assert outcome == "done" and text, (model, streams.results[model])
    for model in [*long, claude_long]:
        outcome, message = streams.results[model]
        assert outcome == "error" and "Clutch is shutting down" in message, (model, streams.results[model])
    assert not any(entry[0] == "broken" for entry in streams.results.values()), streams.results

    booked = {row["model"]: row for row in rows(tmp_path)}
    for model in [*short, claude_short]:
        assert booked[model]["outcome"] == "success", booked[model]
    for model in [*long, claude_long]:
        assert booked[model]["outcome"] == "aborted" and booked[model]["error_class"] == "shutdown", booked[model]
        assert booked[model]["output_tokens"], booked[model]  # what was generated until then (estimated)
    assert "drain/late" not in {e.get("model") for e in fake.entries()}  # refused, never sent
    assert not list((tmp_path / "state").glob("inflight-*"))  # a clean stop leaves no in-flight record


def test_kill_9_then_restart_reports_the_lost_requests(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki)
    streams = Streams(gateway, "killed")
    lost = [f"killed/k{i}-{LONG}" for i in range(3)]
    for model in lost:
        streams.openai(model)
    streams.wait_first()
    os.kill(gateway.process.pid, signal.SIGKILL)
    gateway.process.wait(timeout=10)
    gateway.log.close()
    streams.join()

    again = start(tmp_path, fake, pki)
    try:
        health = again.health()["lost_in_flight"]
        assert health["count"] == 3
        assert sorted(entry["model"] for entry in health["requests"]) == [f"openrouter:{m}" for m in lost]
        assert {entry["agent"] for entry in health["requests"]} == {"opencode"}
        assert "3 attempts were lost in flight when the gateway last stopped" in again.output()
        booked = again.usage_rows(error_class="lost_in_flight")
        assert sorted(row["model"] for row in booked) == lost
        assert {row["outcome"] for row in booked} == {"aborted"}
    finally:
        assert again.stop() == 0
    third = start(tmp_path, fake, pki)  # counted once: the record was claimed
    try:
        assert third.health()["lost_in_flight"]["count"] == 0
    finally:
        third.stop()


def test_a_record_named_after_this_very_process_is_a_killed_predecessors(tmp_path):
    """In a container a restarted gateway often gets the PID the killed one had: the record named after
    it cannot be this process's own (it opens its record after claiming), so it is counted, once."""
    from addons.accounting.inflight import PREFIX, SUFFIX, claim_leftovers
    record = tmp_path / f"{PREFIX}{os.getpid()}{SUFFIX}"
    record.write_text('{"+": "r1", "agent": "claude", "model": "anthropic:m", "ts": 1}\n'
                      '{"+": "r2", "agent": "claude", "model": "anthropic:m", "ts": 2}\n{"-": "r2"}\n')
    lost = claim_leftovers(tmp_path)
    assert [entry.request_id for entry in lost] == ["r1"]
    assert not record.exists() and claim_leftovers(tmp_path) == []
