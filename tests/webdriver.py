"""A small W3C WebDriver client over httpx, driving Debian's headless Chromium through chromedriver.

Why not selenium: the dashboard test needs a handful of commands (new session, navigate, find
elements, execute script, screenshot). Those are plain JSON over HTTP in the W3C spec
(https://www.w3.org/TR/webdriver2/), so a couple of hundred lines over httpx, which the tests already use, beat a
large dependency with its own driver manager that would try to download browsers from the network.

    with Browser.start() as browser:
        browser.get("http://127.0.0.1:8780/dashboard")
        browser.wait(lambda: browser.script("return document.readyState") == "complete")
        browser.screenshot(Path("shot.png"))

chromedriver runs on an ephemeral loopback port in a process group of its own; Chromium is its
child. Both are stopped by that group id, never by name.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
from harness import stop_group  # chromedriver and the Chromium it spawned: one process group

# Debian's packages (./clutch test installs them); elsewhere point these variables at a Chromium and its driver
CHROMIUM = Path(os.environ.get("CLUTCH_CHROMIUM") or "/usr/bin/chromium")
CHROMEDRIVER = Path(os.environ.get("CLUTCH_CHROMEDRIVER") or "/usr/bin/chromedriver")
CHROME_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               # the page talks to the gateway directly: never through an HTTPS_PROXY of the environment
               "--no-proxy-server", "--window-size=1280,900"]
# W3C: elements come back as {ELEMENT_KEY: id}
ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"
_PORT_LINE = re.compile(rb"started successfully on port (\d+)")


class WebDriverError(Exception):
    pass


def missing() -> str | None:
    """Why the browser cannot run here, and how to make it, or None when Chromium and chromedriver are
    installed."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return (f"{path} is missing: `CLUTCH_INSTALL_SYSTEM=1 ./clutch test` installs Chromium and "
                    f"chromedriver with apt-get (so does answering y when ./clutch test asks), or name yours "
                    f"with CLUTCH_CHROMIUM and CLUTCH_CHROMEDRIVER")
    return None


def need_browser() -> None:
    """Skip the test without Chromium, saying how to get it; in CI (CLUTCH_REQUIRE_E2E) fail instead."""
    import pytest

    reason = missing()
    if reason:
        if os.environ.get("CLUTCH_REQUIRE_E2E"):
            pytest.fail(reason)
        pytest.skip(reason)


class Element:
    def __init__(self, browser: Browser, element_id: str):
        self.browser = browser
        self.id = element_id

    @property
    def text(self) -> str:
        return self.browser._command("GET", f"/element/{self.id}/text")

    def attribute(self, name: str) -> str | None:
        return self.browser._command("GET", f"/element/{self.id}/attribute/{name}")

    def click(self) -> None:
        self.browser._command("POST", f"/element/{self.id}/click", {})


class Browser:
    def __init__(self, driver: subprocess.Popen, port: int, profile: Path, log_path: Path,
                 args: tuple[str, ...] = ()):
        self.driver = driver
        self.args = args
        self.port = port
        self.profile = profile
        self.log_path = log_path
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False)
        self.session: str | None = None

    @classmethod
    def start(cls, timeout: float = 30, args: tuple[str, ...] = ()) -> Browser:
        """A fresh Chromium; `args` replace or add to CHROME_ARGS (a later switch wins), e.g.
        --proxy-server or --host-resolver-rules."""
        reason = missing()
        if reason:
            raise WebDriverError(reason)
        profile = Path(tempfile.mkdtemp(prefix="clutch-chromium-"))
        log_path = profile / "chromedriver.log"
        with open(log_path, "wb") as log:
            # --port=0: chromedriver binds a free port and prints it; it listens on loopback only by default
            driver = subprocess.Popen([str(CHROMEDRIVER), "--port=0"], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        browser = None
        try:
            port = _wait_port(log_path, driver, timeout)
            browser = cls(driver, port, profile, log_path, args)
            browser._new_session(timeout)
            return browser
        except BaseException:
            if browser is not None:
                browser.close()
            else:
                stop_group(driver)
                shutil.rmtree(profile, ignore_errors=True)
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_session(self, timeout: float) -> None:
        switches = [a for a in CHROME_ARGS if not (a == "--no-proxy-server" and any(
            b.startswith("--proxy-server") for b in self.args))]
        options = {"binary": str(CHROMIUM),
                   "args": [*switches, *self.args, f"--user-data-dir={self.profile / 'profile'}"]}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options,
                                        "goog:loggingPrefs": {"browser": "ALL"}}}
        value = self._command("POST", "/session", {"capabilities": capabilities}, session=False)
        self.session = value["sessionId"]
        self._command("POST", "/timeouts", {"pageLoad": int(timeout * 1000), "script": int(timeout * 1000)})

    def _command(self, method: str, path: str, body: dict | None = None, session: bool = True) -> Any:
        url = f"/session/{self.session}{path}" if session else path
        response = self.http.request(method, url, json=body)
        try:
            payload = response.json()
        except ValueError:
            raise WebDriverError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}") from None
        value = payload.get("value")
        if response.status_code != 200:
            detail = value if not isinstance(value, dict) else f"{value.get('error')}: {value.get('message')}"
            raise WebDriverError(f"{method} {path}: HTTP {response.status_code} {detail}")
        return value

    def get(self, url: str) -> None:
        self._command("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        """Run `source` as a function body in the page (`return ...` gives the value back)."""
        return self._command("POST", "/execute/sync", {"script": source, "args": list(args)})

    def find_all(self, css: str) -> list[Element]:
        found = self._command("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self, item[ELEMENT_KEY]) for item in found]

    def find(self, css: str) -> Element:
        item = self._command("POST", "/element", {"using": "css selector", "value": css})
        return Element(self, item[ELEMENT_KEY])

    def wait(self, condition: Callable[[], Any], timeout: float = 20, interval: float = 0.2,
             message: str = "condition") -> Any:
        """Poll `condition` until it returns something truthy; that value. WebDriver errors while the
        page is still changing count as not yet."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except WebDriverError as e:
                last_error = e
            time.sleep(interval)
        raise TimeoutError(f"{message} not met within {timeout} s" + (f" (last error: {last_error})" if last_error else ""))

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self._command("GET", "/screenshot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return path

    def full_screenshot(self, path: Path, width: int = 1280) -> Path:
        """The whole page, not only the viewport: grow the window to the document's height first."""
        height = int(self.script("return Math.ceil(document.documentElement.scrollHeight)"))
        self._command("POST", "/window/rect", {"width": width, "height": height + self._chrome_height()})
        return self.screenshot(path)

    def _chrome_height(self) -> int:
        """What the window adds around the viewport (headless Chromium still reserves room for it)."""
        return int(self.script("return window.outerHeight - window.innerHeight"))

    def console(self) -> list[dict]:
        """The browser console so far (chromedriver's legacy log endpoint; [] where unsupported)."""
        try:
            return self._command("POST", "/se/log", {"type": "browser"})
        except WebDriverError:
            return []

    def close(self) -> None:
        try:
            if self.session is not None and self.driver.poll() is None:
                try:
                    self.http.delete(f"/session/{self.session}", timeout=10)
                except httpx.HTTPError:
                    pass
                self.session = None
        finally:
            self.http.close()
            stop_group(self.driver)
            shutil.rmtree(self.profile, ignore_errors=True)


def _wait_port(log_path: Path, driver: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _PORT_LINE.search(log_path.read_bytes())
        if match:
            return int(match.group(1))
        if driver.poll() is not None:
            raise WebDriverError(f"chromedriver exited with {driver.returncode}: {log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    raise WebDriverError(f"chromedriver did not report its port within {timeout} s")
