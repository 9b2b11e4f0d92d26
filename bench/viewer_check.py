"""Opens a trajectories.html (rollout/viewer.py) in headless Chromium, screenshots it, and checks it
as a reader sees it: every response token carries exactly one step colour class, the class matches
the step printed under the token, its rendered colour is the legend's colour for that step and no two
steps share a colour; then it clicks each toggle button (real mouse events over the DevTools
protocol) and checks which decodings are visible. Prints one JSON line; exit status 1 on a problem.

    python bench/viewer_check.py runs/arith_tracerl/trajectories.html --screenshot viewer.png
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import websocket

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Per response, per token: its step classes, the step printed under it, its rendered background.
TOKENS_JS = """JSON.stringify({
  legend: Object.fromEntries([...document.querySelectorAll('.legend .tok')].map(e =>
    [[...e.classList].find(c => /^s\\d+$/.test(c)), getComputedStyle(e).backgroundColor])),
  responses: [...document.querySelectorAll('section .resp')].map(r => [...r.querySelectorAll('.tok')].map(t =>
    ({classes: [...t.classList].filter(c => /^s\\d+$/.test(c)), step: t.querySelector('sub').textContent,
      colour: getComputedStyle(t).backgroundColor})))})"""
VISIBLE_JS = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('section')].map(s =>
  [s.dataset.mode, s.getBoundingClientRect().height > 0])))"""
BUTTONS_JS = "JSON.stringify([...document.querySelectorAll('button[data-show]')].map(b => b.dataset.show))"


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class Page:
    """One tab of a headless Chromium, driven over the DevTools protocol's WebSocket."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str) -> Any:
        """The JSON string `expression` evaluates to, decoded."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "value" not in result["result"]:
            raise RuntimeError(f"{expression[:60]}...: {result.get('exceptionDetails', result['result'])}")
        return json.loads(result["result"]["value"])

    def click(self, selector: str) -> None:
        """Press and release the mouse over the element's centre, as a user's click."""
        x, y = self.js(f"JSON.stringify((r => [r.x + r.width / 2, r.y + r.height / 2])"
                       f"(document.querySelector({json.dumps(selector)}).getBoundingClientRect()))")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        height = self.js("JSON.stringify(document.documentElement.scrollHeight)")
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1400, "height": min(height, 4000), "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))


@contextmanager
def open_page(html: Path, browser: str) -> Iterator[Page]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="viewer-check-")
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                             "--window-size=1400,1000", html.resolve().as_uri()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2).read())
                url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{browser} did not open its DevTools port") from None
                time.sleep(0.3)
        page = Page(url)
        while not page_loaded(page, html.resolve().as_uri()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{browser} did not load {html}")
            time.sleep(0.1)
        yield page
        page.ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


def page_loaded(page: Page, url: str) -> bool:
    """Our file is the tab's loaded document (it may still show about:blank, or be navigating)."""
    try:
        return page.js("JSON.stringify([location.href, document.readyState])") == [url, "complete"]
    except RuntimeError:  # the context went away mid-navigation
        return False


def check_tokens(found: dict[str, Any]) -> list[str]:
    problems, colours = [], {}
    for i, response in enumerate(found["responses"]):
        for j, tok in enumerate(response):
            if tok["classes"] != [f"s{tok['step']}"]:
                problems.append(f"response {i} token {j}: classes {tok['classes']} for step {tok['step']}")
            elif tok["colour"] != found["legend"].get(tok["classes"][0]):
                problems.append(f"response {i} token {j}: colour {tok['colour']} is not the legend's for "
                                f"step {tok['step']} ({found['legend'].get(tok['classes'][0])})")
            colours.setdefault(tok["colour"], set()).add(tok["step"])
    problems += [f"steps {sorted(steps)} share the colour {c}" for c, steps in colours.items() if len(steps) > 1]
    return problems


def check_page(html: Path, screenshot: Path, browser: str) -> dict[str, Any]:
    with open_page(html, browser) as page:
        page.screenshot(screenshot)
        found = page.js(TOKENS_JS)
        problems = [] if found["responses"] else ["no response on the page"]
        problems += check_tokens(found)
        modes = [m for m in page.js(BUTTONS_JS) if m != "all"]
        toggles = {}
        for show in modes + ["all"]:
            page.click(f'button[data-show="{show}"]')
            visible = page.js(VISIBLE_JS)
            toggles[show] = visible
            if visible != {m: show in ("all", m) for m in modes}:
                problems.append(f"after clicking '{show}' the visible sections are {visible}")
    return {"html": str(html), "screenshot": str(screenshot), "responses": len(found["responses"]),
            "tokens": sum(len(r) for r in found["responses"]), "steps": len(found["legend"]),
            "toggles": toggles, "problems": problems}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("html", type=Path)
    p.add_argument("--screenshot", type=Path, default=Path("viewer.png"))
    args = p.parse_args()
    browser = find_browser()
    if browser is None:
        sys.exit("no Chromium found (Debian/Ubuntu: apt-get install chromium)")
    result = check_page(args.html, args.screenshot, browser)
    print(json.dumps(result))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
