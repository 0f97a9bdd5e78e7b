"""mitmweb as `./clutch web` starts it, seen in headless Chromium: the flow list shows Clutch's flows,
the columns `./clutch web` asks for (comment included) with Clutch's comment in them, and the marker
of an OpenRouter fallback.

The gateway's command line is launcher.gateway.web_arguments, the builder `./clutch web` runs, so a
wrong `--set web_columns` (once one comma-joined value: a single unknown column, and mitmweb's flow
list rendered nothing) fails here. The page is opened with the token mitmweb prints, as a user does.
The screenshot lands in tests/artifacts/mitmweb-flows.png for a person to look at.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import httpx
import pytest
import webdriver
from harness import MITMWEB, Gateway, free_port, trust, wait_until

from addons.wire.identity import Identity, username_for
from launcher.gateway import WEB_COLUMNS, web_arguments

pytestmark = pytest.mark.e2e

ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "mitmweb-flows.png"
RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
    cascades:
      "openrouter:mw/fail-429": ["openrouter:mw/good"]
    fallback: {method: both}
    compression: {mode: "off"}
""")
REPEAT = "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"  # the marker ":repeat:" as mitmweb shows it
_TOKEN = re.compile(r"Web server listening at (http://127\.0\.0\.1:\d+/\?token=[0-9a-f]+)")


@pytest.fixture
def mitmweb(tmp_path, fake, pki):
    reason = webdriver.missing()  # before starting anything
    if reason:
        if os.environ.get("CLUTCH_REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    # what a user adds after `./clutch web`: no browser of its own, no retry, a temporary state folder
    extra = ["--set", "web_open_browser=false", "--set", "clutch_retries=0",
             "--set", f"clutch_state_dir={tmp_path / 'state'}"]
    command = web_arguments(free_port(), rules, None, extra, tmp_path / "certs", free_port())
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert, tool=MITMWEB, command=command,
                      env={"OPENROUTER_API_KEY": "sk-or-v1-rules"})
    yield gateway
    gateway.stop()


def chat(gateway, session: str, model: str, stream: bool) -> httpx.Response:
    proxy = gateway.proxy_url(username_for(Identity(agent="opencode", session=session)))
    with httpx.Client(proxy=proxy, verify=trust(gateway.ca_cert), trust_env=False, timeout=30) as client:
        return client.post("https://openrouter.ai/api/v1/chat/completions",
                           headers={"authorization": "Bearer sk-or-v1-agent"},
                           json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


def web_url(gateway) -> str:
    """The UI's address with its token, from the line mitmweb prints at start."""
    assert wait_until(lambda: _TOKEN.search(gateway.output()), timeout=20), gateway.output()
    return _TOKEN.search(gateway.output()).group(1)


def flow_rows(browser) -> list[dict]:
    """Each row of the flow list: {column class: cell text}, and the marker."""
    return browser.script("""
        return [...document.querySelectorAll(".flow-table tbody tr")].filter(tr => tr.querySelector("td"))
            .map(tr => {
                const row = {};
                for (const td of tr.querySelectorAll("td")) row[td.className.split(" ")[0]] = td.textContent;
                const marker = tr.querySelector(".col-path .marker");
                row.marker = marker ? marker.textContent : "";
                return row;
            });""")


def listed(browser) -> dict[str, dict]:
    """The flow list's rows of Clutch's LLM flows, by the model the agent asked for (from the comment)."""
    found = {}
    for row in flow_rows(browser):
        model = re.search(r" model=(\S+) via ", row.get("col-comment", ""))
        if model:
            found[model.group(1)] = row
    return found


def test_clutch_web_lists_clutchs_flows_with_their_comments_and_marker(mitmweb):
    url = web_url(mitmweb)
    assert chat(mitmweb, "mw1", "mw/plain", stream=True).status_code == 200
    assert chat(mitmweb, "mw1", "mw/other", stream=False).status_code == 200
    fallback = chat(mitmweb, "mw2", "mw/fail-429", stream=True)
    assert fallback.status_code == 200 and fallback.headers["x-clutch-model"] == "openrouter:mw/good"
    with webdriver.Browser.start() as browser:
        browser.get(url)
        rows = browser.wait(lambda: (found := listed(browser)) and found.get("mw/fail-429", {}).get("marker")
                            and len(found) == 3 and found, timeout=20, message="Clutch's flows in mitmweb's list")
        browser.full_screenshot(ARTIFACT)
        print(f"mitmweb screenshot: {ARTIFACT}")
        headers = browser.script("""return [...document.querySelectorAll(".flow-table thead th")]
            .map(th => [th.className.split(" ")[0], th.textContent]);""")
        severe = [entry["message"] for entry in browser.console() if entry.get("level") == "SEVERE"]
    # what mitmweb's API holds (its page reads the same): the list shows these comments whole
    token = url.rsplit("=", 1)[1]
    flows = httpx.get(url.split("?")[0] + "flows", headers={"authorization": f"Bearer {token}"},
                      trust_env=False, timeout=10).json()
    comments = {re.search(r" model=(\S+) via ", f["comment"]).group(1): f["comment"]
                for f in flows if " model=" in (f.get("comment") or "")}

    # the columns `./clutch web` asks for, in its order (mitmweb adds its quick actions last)
    assert [name for name, _ in headers] == [f"col-{column}" for column in WEB_COLUMNS] + ["col-quickactions"]
    assert dict(headers)["col-comment"] == "Comment" and dict(headers)["col-path"] == "Path"
    assert set(rows) == {"mw/plain", "mw/other", "mw/fail-429"}
    for model, row in rows.items():
        assert row["col-comment"] == comments[model]  # Clutch's whole comment, as the flow holds it
        assert row["col-comment"].startswith("clutch: opencode session=mw")
        assert row["col-method"] == "POST" and row["col-status"] == "200"
        assert row["col-path"].endswith("https://openrouter.ai/api/v1/chat/completions")
    assert "attempts: mw/plain 200" in rows["mw/plain"]["col-comment"]
    assert "served by openrouter:mw/good (OpenRouter fallback)" in rows["mw/fail-429"]["col-comment"]
    assert rows["mw/fail-429"]["marker"] == REPEAT  # the engine's ":repeat:": a fallback answered
    assert rows["mw/plain"]["marker"] == rows["mw/other"]["marker"] == ""
    assert severe == []
    assert ARTIFACT.stat().st_size > 10_000
