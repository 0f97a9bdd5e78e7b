"""The compression benchmark's cost model (bench/cache_cost.py), checked against sums done by hand."""

from __future__ import annotations

import pytest

from bench.cache_cost import PRICING, Turn, p3_cost, session_cost, turn_of

# One session of three turns. Messages A (600 tokens) and B (600); then C (300) and D (100) are
# appended; then B is replaced by B' (100 tokens, a rewrite) and E (200) appended.
SESSION = [
    Turn(("A", "B"), (600, 600), breakpoint=2),
    Turn(("A", "B", "C", "D"), (600, 600, 300, 100), breakpoint=4),
    Turn(("A", "B'", "C", "D", "E"), (600, 100, 300, 100, 200), breakpoint=5),
]


def test_anthropic_prices_a_session_of_three_turns():
    """Anthropic, a breakpoint on the newest message of each turn:
    turn 1: nothing cached; A+B = 1,200 tokens (>= 1,024) written at 1.25x     = 1,500
    turn 2: A+B read at 0.1x (120) + C+D = 400 written at 1.25x (500)            =   620
    turn 3: B changed, and a cache entry exists only where a breakpoint was (after B, after D),
            so nothing is read: all 1,300 tokens written at 1.25x                = 1,625
    session: 1,500 + 620 + 1,625 = 3,745 uncached-input tokens."""
    assert session_cost(PRICING["anthropic"], SESSION) == pytest.approx(3745)


def test_anthropic_without_breakpoints_caches_nothing():
    """No cache_control anywhere (an OpenAI-format agent sent to Claude): every token at 1x,
    1,200 + 1,600 + 1,300 = 4,100; a breakpoint after message 1 only (A, 600 tokens) is under the
    1,024-token minimum, so it changes nothing."""
    bare = [Turn(t.keys, t.tokens, 0) for t in SESSION]
    assert session_cost(PRICING["anthropic"], bare) == pytest.approx(4100)
    short = [Turn(t.keys, t.tokens, 1) for t in SESSION]
    assert session_cost(PRICING["anthropic"], short) == pytest.approx(4100)


def test_openai_prices_a_session_of_three_turns():
    """OpenAI at 0.5x (GPT-4o), automatic, 1,024 tokens minimum, 128-token steps:
    turn 1: nothing cached: 1,200 at 1x                                         = 1,200
    turn 2: A+B = 1,200 tokens in common, counted as 1,152 (9 x 128) at 0.5x (576)
            + the other 1,600 - 1,152 = 448 at 1x                               = 1,024
    turn 3: only A (600 tokens) in common, under the minimum: 1,300 at 1x       = 1,300
    session: 3,524. At OpenRouter's DeepSeek (0.1x, 64-token steps, 64 minimum): 1,200
    + (1,152 x 0.1 + 448 = 563.2) + (576 x 0.1 + 724 = 781.6) = 2,544.8."""
    assert session_cost(PRICING["openai 0.5x"], SESSION) == pytest.approx(3524)
    assert session_cost(PRICING["openrouter deepseek"], SESSION) == pytest.approx(2544.8)


def test_p3_reads_the_prefix_up_to_a_rewrite():
    """The research's P3 (0.1x the messages equal to the previous turn's, 1.25x the rest):
    1,500 + (120 + 500) + (60 + 700 x 1.25 = 935) = 3,055: cheaper than Anthropic really bills."""
    assert p3_cost(SESSION) == pytest.approx(3055)


def test_a_body_becomes_a_turn_without_its_breakpoints():
    """A message's identity ignores cache_control (moving a breakpoint is no rewrite); Claude Code's
    own breakpoint (lost from the corpus) is on the newest message, an OpenAI-format agent has none
    unless it marks one."""
    marked = {"max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "go on"}]}
    plain = {"max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "go on"}]}
    assert turn_of("anthropic", marked).keys == turn_of("anthropic", plain).keys
    assert turn_of("anthropic", marked).breakpoint == 1
    assert turn_of("anthropic", plain).breakpoint == 3
    assert turn_of("openai", {"messages": plain["messages"]}).breakpoint == 0
    assert turn_of("openai", {"messages": plain["messages"]}, "clutch").breakpoint == 3


def test_a_turn_with_clutchs_breakpoints_is_the_prompt_that_goes_upstream():
    """With Clutch's breakpoints, a turn's identity is the marked body, markers aside; a string message
    that a breakpoint turned into one marked text block is still the same message, so a session whose
    breakpoints move on keeps its prefix, and a message that really changed does not."""
    first = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]}
    second = {"messages": [*first["messages"], {"role": "assistant", "content": "ls"},
                           {"role": "user", "content": "a.py"}]}
    one, two = turn_of("openai", first, "clutch"), turn_of("openai", second, "clutch")
    assert two.keys[:2] == one.keys
    assert two.keys == turn_of("openai", second).keys
    assert (one.breakpoint, two.breakpoint) == (2, 4)
    changed = {"messages": [first["messages"][0], {"role": "user", "content": "task!"}, *second["messages"][2:]]}
    assert turn_of("openai", changed, "clutch").keys[:2] != one.keys
    wrapped = {"messages": [{"role": "user", "content": [{"type": "text", "text": "task"}]}]}
    assert turn_of("openai", wrapped).keys == turn_of("openai", {"messages": [first["messages"][1]]}).keys
