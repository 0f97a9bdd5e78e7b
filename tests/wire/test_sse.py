from addons.wire.sse import SSEEvent, SSEParser

STREAM = (b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n"
          b": keep-alive comment\n\n"
          b"data: line one\ndata: line two\n\n"
          b"data:no-space\r\rdata: [DONE]\n\n")
EXPECTED = [SSEEvent("message_start", '{"a":1}'), SSEEvent("message", "line one\nline two"),
            SSEEvent("message", "no-space"), SSEEvent("message", "[DONE]")]


def test_whole_stream():
    assert SSEParser().feed(STREAM) == EXPECTED


def test_any_chunking_gives_the_same_events():
    for size in (1, 2, 3, 7, 16):
        parser = SSEParser()
        events = []
        for i in range(0, len(STREAM), size):
            events += parser.feed(STREAM[i:i + size])
        assert events == EXPECTED, size


def test_unfinished_event_waits_for_its_blank_line():
    parser = SSEParser()
    assert parser.feed(b"data: partial") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "partial")]
