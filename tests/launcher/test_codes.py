"""`xx` launch codes: grammar, the letters table, and the nearest valid code in errors."""

import pytest

from addons.wire.identity import AGENT_LETTERS, identity_from_username
from launcher.codes import CodeError, LaunchCode, all_codes, code_table, nearest, parse_code


def test_parses_agent_mode_route():
    assert parse_code("cip") == LaunchCode(agent="claude", mode="i", route="p", tier=None, text="cip")


def test_parses_tier_letter_and_digit_and_xx_prefix():
    assert parse_code("xx hcpd") == LaunchCode("hermes", "c", "p", "d", "hcpd")
    assert parse_code("  xnb3 ") == LaunchCode("codex", "n", "b", "3", "xnb3")


@pytest.mark.parametrize("letter,agent", sorted(AGENT_LETTERS.items()))
def test_every_agent_letter(letter, agent):
    assert parse_code(letter + "sd").agent == agent


def test_every_valid_code_parses_and_agrees_with_the_gateway():
    codes = all_codes()
    assert len(codes) == len(AGENT_LETTERS) * 5 * 3 * (1 + 16)
    for code in codes:
        parsed = parse_code(code)
        seen = identity_from_username(f"xx-{code}")  # what Clutch decodes from the proxy user name
        assert (seen.agent, seen.launch_code, seen.route, seen.tier) == (
            parsed.agent, code, parsed.route, parsed.tier)


@pytest.mark.parametrize("text,reason,suggestion", [
    ("cxp", "unknown mode 'x'", "cip"),
    ("cpi", "unknown mode 'p'", "cip"),  # swapped letters
    ("zip", "unknown agent 'z'", "cip"),
    ("ciz", "unknown route 'z'", "cip"),
    ("cipz", "unknown tier 'z'", "cip"),
    ("cipdd", "too long", "cipd"),
    ("xi", "missing route", "xip"),
    ("h", "missing mode and route", "hip"),
    ("qnx", "unknown route 'x'", "qnp"),
    ("wsq", "unknown route 'q'", "wsp"),
])
def test_errors_name_the_problem_the_nearest_code_and_the_table(text, reason, suggestion):
    with pytest.raises(CodeError) as caught:
        parse_code(text)
    message = str(caught.value)
    assert reason in message
    assert f"did you mean `xx {suggestion}`?" in message
    assert code_table() in message
    assert caught.value.nearest == suggestion


def test_nearest_prefers_the_same_agent_letter():
    # 'o' (opencode) with an unknown mode: every agent's `?ip` is one edit away, opencode's wins
    assert nearest("oxp") == "oip"
    assert nearest("pxd") == "pid"


def test_empty_code_has_no_suggestion():
    with pytest.raises(CodeError) as caught:
        parse_code("   ")
    assert "no launch code" in str(caught.value) and "did you mean" not in str(caught.value)


def test_table_lists_every_letter():
    text = code_table()
    for letter, agent in AGENT_LETTERS.items():
        assert f"{letter} {agent}" in text
    for word in ("init", "continue", "non-interactive", "session", "resume", "proxy", "bypass", "direct", "0-9"):
        assert word in text


def test_code_is_frozen():
    code = parse_code("cip")
    with pytest.raises(AttributeError):
        code.mode = "c"
