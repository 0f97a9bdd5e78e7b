"""Classify: which flows are LLM calls of a configured provider."""

import gzip
import json

from mitmproxy.test import taddons, tflow, tutils

from addons.classify import Classify
from addons.flows.meta import CALL, WEBSOCKET, call_of
from addons.rulebook import Rulebook
from addons.wire.dialects import Dialect


def flow(host: str, path: str, body: bytes = b"", method: str = "POST", **headers):
    f = tflow.tflow(req=tutils.treq(host=host, port=443, scheme=b"https", path=path.encode(),
                                    method=method.encode(), content=b""))
    f.request.headers.update(headers)
    f.request.raw_content = body  # as it came off the wire: still encoded
    return f


def test_llm_request_of_a_provider_gets_a_call():
    rulebook = Rulebook()
    classify = Classify(rulebook)
    with taddons.context(rulebook, classify):
        f = flow("openrouter.ai", "/api/v1/chat/completions", b'{"model": "m/x", "stream": true}')
        classify.request(f)
        call = call_of(f)
        assert (call.provider, call.dialect, call.model, call.stream) == ("openrouter", Dialect.OPENAI_CHAT, "m/x", True)
        assert f.metadata[CALL] == {"dialect": "openai_chat", "provider": "openrouter", "model": "m/x", "stream": True}


def test_compressed_bodies_are_read_decoded():
    rulebook = Rulebook()
    classify = Classify(rulebook)
    with taddons.context(rulebook, classify):
        body = gzip.compress(json.dumps({"model": "claude-haiku-5"}).encode())
        f = flow("api.anthropic.com", "/v1/messages", body, **{"content-encoding": "gzip"})
        classify.request(f)
        assert call_of(f).model == "claude-haiku-5"
        assert f.request.raw_content == body  # forwarded as sent


def test_everything_else_is_left_alone():
    rulebook = Rulebook()
    classify = Classify(rulebook)
    with taddons.context(rulebook, classify):
        for f in [flow("api.anthropic.com", "/api/hello", method="GET"),
                  flow("openrouter.ai", "/api/v1/models", method="GET"),
                  flow("example.com", "/v1/chat/completions", b'{"model": "x"}'),
                  flow("openrouter.ai.evil.com", "/api/v1/chat/completions", b'{"model": "x"}')]:
            classify.request(f)
            assert CALL not in f.metadata and WEBSOCKET not in f.metadata


def test_codex_websocket_upgrade_is_marked():
    rulebook = Rulebook()
    classify = Classify(rulebook)
    with taddons.context(rulebook, classify):
        f = flow("api.openai.com", "/v1/responses", method="GET", upgrade="websocket")
        classify.request(f)
        assert f.metadata[WEBSOCKET] is True and CALL not in f.metadata


def test_undecodable_body_is_forwarded_unread():
    rulebook = Rulebook()
    classify = Classify(rulebook)
    with taddons.context(rulebook, classify):
        f = flow("api.openai.com", "/v1/chat/completions", b"\x00garbage", **{"content-encoding": "gzip"})
        classify.request(f)
        assert call_of(f).model is None and call_of(f).body is None
