"""The script mitmproxy loads: it survives mitmproxy's hot reload of `addons/clutch.py`."""

from __future__ import annotations

import os
import time

import httpx
from harness import ROOT, Gateway, trust

SCRIPT = ROOT / "addons" / "clutch.py"


def test_script_hot_reload_keeps_the_gateway_working(tmp_path, fake, pki):
    gateway = Gateway(tmp_path, fake.port, pki.ca_cert)
    try:
        assert gateway.output().count("Loading script") == 1
        stat = SCRIPT.stat()
        os.utime(SCRIPT, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # what an editor's save does
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and gateway.output().count("Loading script") < 2:
            time.sleep(0.1)
        assert gateway.output().count("Loading script") == 2, gateway.output()
        assert "Traceback" not in gateway.output()
        with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert)) as client:
            response = client.post("https://openrouter.ai/api/v1/chat/completions",
                                   json={"model": "script/reloaded", "messages": []})
        assert response.status_code == 200
        assert "x-clutch-flow" in fake.wait_for(lambda e: e.get("model") == "script/reloaded")["headers"]
    finally:
        os.utime(SCRIPT, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        gateway.stop()
