"""The rules page through a real gateway: it shows the rules and the key variables (never a key),
a save needs the token and Clutch's own origin, writes the user's file atomically with a backup and
is in force at once (the poll is off here); in headless Chromium an edited tier routes the next
request, an invalid edit shows its error at the field, and a page of another origin cannot save.
"""

from __future__ import annotations

import http.server
import json
import socket
import stat
import textwrap
import threading
from pathlib import Path

import anthropic
import httpx
import pytest
import webdriver
import yaml
from harness import ROOT, Gateway, trust

pytestmark = pytest.mark.gateway

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ENV_KEY = "sk-or-v1-page-env-key-0123456789abcdef"
FILE_KEY = "sk-ant-page-keys-file-0123456789abcdef"
USER = textwrap.dedent("""\
    # the user's own comment
    version: 1
    tiers:
      big: openrouter:page/old-big
""")


def keys_file(config: Path) -> None:
    folder = config / "clutch"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "keys.env"
    path.write_text(f"ANTHROPIC_API_KEY={FILE_KEY}\n")
    path.chmod(0o600)


def raw(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request as exactly these bytes; the answer's status and body."""
    data = head.replace("\n", "\r\n").encode() + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), rest


def start(workdir: Path, fake, pki, env: dict[str, str], rules: Path | None = None) -> Gateway:
    """A gateway whose rules poll is off (only the page's own reload can put a save in force), on
    --rules `rules` or, without, on the user's file where Clutch looks for it."""
    command = ["-s", str(ROOT / "addons" / "clutch.py"), "--listen-host", "127.0.0.1", "--listen-port", "0",
               "--set", f"confdir={workdir / 'certs'}", "--set", "clutch_rules_poll_ms=0",
               *(["--set", f"clutch_rules={rules}"] if rules else [])]
    return Gateway(workdir, fake.port, pki.ca_cert, env=env, command=command)


def local(gateway, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{gateway.port}{path}", timeout=10, trust_env=False)


def opus(gateway) -> None:
    """Claude Code's opus request through the proxy, as the anthropic SDK sends it."""
    import importlib
    base = importlib.import_module("anthropic._base_client")
    flavour = getattr(base, "httpx2", None) or base.httpx  # the SDK's own httpx (a fork in newer versions)
    with flavour.Client(proxy=gateway.proxy_url("claude"), verify=trust(gateway.bundle), trust_env=False,
                        timeout=30) as client:
        sdk = anthropic.Anthropic(base_url="https://api.anthropic.com", api_key="sk-ant-agent-key", max_retries=0,
                                  http_client=client)
        answer = sdk.messages.create(model="claude-opus-4-1", max_tokens=16,
                                     messages=[{"role": "user", "content": "which model?"}])
    assert answer.content


@pytest.fixture
def explicit(tmp_path, fake, pki):
    """A gateway on --rules FILE, its poll off."""
    config = tmp_path / "config"
    keys_file(config)
    rules = tmp_path / "rules.yaml"
    rules.write_text(USER)
    gateway = start(tmp_path, fake, pki, {"OPENROUTER_API_KEY": ENV_KEY, "XDG_CONFIG_HOME": str(config)}, rules)
    yield gateway, rules
    gateway.stop()


def test_raw_saves_are_refused_unless_local_json_with_the_token_and_a_good_one_is_in_force_at_once(explicit, fake):
    gateway, rules = explicit
    port = gateway.port
    page = local(gateway, "/rules")
    assert page.status_code == 200 and "script-src 'sha256-" in page.headers["content-security-policy"]
    state = local(gateway, "/rules/state").json()
    token = state["token"]
    providers = {p["name"]: p for p in state["providers"]}
    assert (providers["openrouter"]["key_variable"], providers["openrouter"]["key_in"]) == ("OPENROUTER_API_KEY", "environment")
    assert (providers["anthropic"]["key_variable"], providers["anthropic"]["key_in"]) == ("ANTHROPIC_API_KEY", "keys file")
    assert state["path"] == str(rules) and state["sections"]["tiers"]["yours"] == {"big": "openrouter:page/old-big"}
    bodies = [page.content, json.dumps(state).encode(), local(gateway, "/health").content, local(gateway, "/").content]

    before = rules.read_bytes()
    save = json.dumps({"base": state["base"], "section": "tiers", "value": {"big": "openrouter:page/raw-big"}}).encode()
    head = f"POST /rules HTTP/1.1\nHost: 127.0.0.1:{port}\n"
    refused = {
        "no token": (head + "content-type: application/json\n", save),
        "a wrong token": (head + "content-type: application/json\nx-clutch-token: " + "A" * 43 + "\n", save),
        "a cross-site Origin": (head + f"content-type: application/json\nx-clutch-token: {token}\n"
                                       "origin: http://evil.example\n", save),
        "Sec-Fetch-Site cross-site": (head + f"content-type: application/json\nx-clutch-token: {token}\n"
                                             "sec-fetch-site: cross-site\n", save),
        "a rebinding Host": (f"POST /rules HTTP/1.1\nHost: evil.example:{port}\ncontent-type: application/json\n"
                             f"x-clutch-token: {token}\n", save),
        "text/plain": (head + f"content-type: text/plain\nx-clutch-token: {token}\n", save),
        "a form": (head + f"content-type: application/x-www-form-urlencoded\nx-clutch-token: {token}\n",
                   b"section=tiers&value=x"),
        "an oversized body": (head + f"content-type: application/json\nx-clutch-token: {token}\n",
                              b'{"base": "", "yaml": "' + b"#" * (300 * 1024) + b'"}'),
    }
    for why, (request_head, body) in refused.items():
        status, answer = raw(port, request_head, body)
        assert status in (403, 413), (why, status, answer)
        assert rules.read_bytes() == before, why
        assert token.encode() not in answer, why
        bodies.append(answer)
    # Origin, Sec-Fetch-Site and the rebinding Host never reach it (BrowserGate), the oversized body is a 413
    assert gateway.output().count("refused a rules save") == 4

    # the same save, as a local client sends it: written, backed up, in force without any poll
    status, answer = raw(port, head + f"content-type: application/json\nx-clutch-token: {token}\n", save)
    bodies.append(answer)
    assert status == 200 and json.loads(answer) == {"saved": str(rules), "in_force": True}
    assert yaml.safe_load(rules.read_text())["tiers"] == {"big": "openrouter:page/raw-big"}
    assert rules.with_name("rules.yaml.bak").read_bytes() == before
    assert local(gateway, "/health").json()["rules"]["tiers"]["big"] == "openrouter:page/raw-big"
    opus(gateway)
    assert fake.wait_for(lambda e: e.get("model") == "page/raw-big")["model"] == "page/raw-big"

    # a save from a page that read an older file is refused, the file as it is
    status, answer = raw(port, head + f"content-type: application/json\nx-clutch-token: {token}\n", save)
    assert status == 409 and b"changed since the page read it" in answer
    bodies += [answer, local(gateway, "/rules/state").content]
    for body in bodies:
        assert ENV_KEY.encode() not in body and FILE_KEY.encode() not in body
    assert ENV_KEY not in gateway.output() and FILE_KEY not in gateway.output() and token not in gateway.output()


class _OtherOrigin(http.server.BaseHTTPRequestHandler):
    """A page of another origin that tries to save the rules: a JSON POST with a guessed token (needs a
    preflight), a no-cors text/plain POST, and a read of /rules/state for the real token."""

    target = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        base = f"http://127.0.0.1:{self.target}"
        save = json.dumps({"base": "", "section": "tiers", "value": {"big": "openrouter:page/evil"}})
        page = f"""<!doctype html><title>loading</title><script>
          const body = {json.dumps(save)};
          Promise.allSettled([
            fetch("{base}/rules", {{method: "POST", body,
                  headers: {{"content-type": "application/json", "x-clutch-token": "guess"}}}}),
            fetch("{base}/rules", {{method: "POST", mode: "no-cors", headers: {{"content-type": "text/plain"}}, body}}),
            fetch("{base}/rules/state").then(r => r.json()),
          ]).then(r => document.title = "done " + r.map(x => x.status).join(","));
        </script>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


def test_in_chromium_an_edited_tier_routes_the_next_request_and_other_origins_cannot_save(tmp_path, fake, pki):
    webdriver.need_browser()
    config = tmp_path / "config"
    rules = config / "clutch" / "rules.yaml"  # places().rules: no --rules, no file, no folder yet
    gateway = start(tmp_path, fake, pki, {"OPENROUTER_API_KEY": ENV_KEY, "XDG_CONFIG_HOME": str(config)})
    server = None
    try:
        with webdriver.Browser.start() as browser:
            browser.get(f"http://127.0.0.1:{gateway.port}/")
            browser.find('a[data-link="rules"]').click()
            browser.wait(lambda: browser.script("return document.body.dataset.state") == "ready", message="page")
            assert browser.script("return location.pathname") == "/rules"
            facts = browser.script("return document.querySelector('[data-fact=\"saves to\"]').textContent")
            assert facts == str(rules) and not rules.exists()

            # an invalid edit: the loader's error at the field, nothing written
            set_field(browser, "tiers.big", "nowhere:model")
            browser.find("#section-tiers button.save").click()
            browser.wait(lambda: browser.script("return document.body.dataset.state") == "invalid", message="error")
            error = browser.script("""const i = document.querySelector('#section-tiers [data-field="tiers.big"]');
                return [i.classList.contains('invalid'), i.parentNode.querySelector('.err').textContent];""")
            assert error[0] and "tiers.big" in error[1] and "'nowhere'" in error[1], error
            assert not rules.exists() and not rules.parent.exists()
            browser.full_screenshot(ARTIFACTS / "rules-page-invalid.png")

            # a good one: saved, in force at once, the next request goes to the new model
            set_field(browser, "tiers.big", "openrouter:page/chromium-big")
            browser.find("#section-tiers button.save").click()
            browser.wait(lambda: browser.script("return document.body.dataset.state") == "saved", message="saved")
            assert yaml.safe_load(rules.read_text()) == {"version": 1, "tiers": {"big": "openrouter:page/chromium-big"}}
            assert stat.S_IMODE(rules.parent.stat().st_mode) == 0o700
            note = browser.script("return document.querySelector('#section-tiers .note').textContent")
            assert note == f"saved to {rules}, in force"
            origin = browser.script("""return document.querySelector('#section-tiers [data-field="tiers.big"]')
                .closest('.row').querySelector('[data-origin]').dataset.origin""")
            assert origin == "yours"
            opus(gateway)
            assert fake.wait_for(lambda e: e.get("model") == "page/chromium-big")
            assert browser.script("return window.__clutchErrors") == []
            shot = browser.full_screenshot(ARTIFACTS / "rules-page.png")
            print(f"rules page screenshot: {shot}")
            assert ENV_KEY not in browser.script("return document.documentElement.outerHTML")

        # a page of another origin, in Chromium: refused, the file unchanged
        saved = rules.read_bytes()
        _OtherOrigin.target = gateway.port
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtherOrigin)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        refused = gateway.output().count("refused")
        with webdriver.Browser.start(args=("--host-resolver-rules=MAP evil.example 127.0.0.1",
                                           "--disable-features=HttpsUpgrades")) as browser:
            for page in (f"http://evil.example:{server.server_address[1]}/",  # another site
                         f"http://localhost:{server.server_address[1]}/"):  # same site, another origin
                browser.get(page)
                title = browser.wait(lambda: (t := browser.script("return document.title")).startswith("done") and t,
                                     message=f"the page at {page}")
                assert title == "done rejected,fulfilled,rejected", title
        assert gateway.output().count("refused") >= refused + 4
        assert rules.read_bytes() == saved and fake.entries_for("page/evil") == []
        assert local(gateway, "/health").json()["rules"]["tiers"]["big"] == "openrouter:page/chromium-big"
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        gateway.stop()


def set_field(browser, field: str, value: str) -> None:
    browser.script("""const i = document.querySelector(`#forms [data-field="${arguments[0]}"]`);
        i.value = arguments[1]; i.dispatchEvent(new Event('input'));""", field, value)
