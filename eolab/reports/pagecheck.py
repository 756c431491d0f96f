"""Load a rendered page in headless Chromium with the network off, and say what it did.

    python -m eolab.reports.pagecheck PAGE.html [PAGE.html ...] [--screenshot]

The browser is Debian's ``chromium``, driven over the Chrome DevTools protocol (``websocket-client``):
network emulation is set to offline before the page loads, and every request the page makes is
recorded (file: and data: URLs are the page itself and its inlined images; anything else would have
left the machine). Then the page's visible text, its math, its images and its code cells are read
back, and optionally a screenshot of its top is written beside it (``summary.png``).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_SCHEMES = ("file:", "data:", "about:")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--hide-scrollbars", "--mute-audio",
)
_PAGE_STATE = r"""(() => {
  const visible = e => (e.checkVisibility ? e.checkVisibility() : e.getClientRects().length > 0);
  const math = Array.from(document.querySelectorAll('math'));
  const imgs = Array.from(document.images);
  const editors = Array.from(document.querySelectorAll('.jp-InputArea-editor'));
  return {
    text: document.body.innerText,
    math: math.length,
    math_drawn: math.filter(m => m.getBoundingClientRect().width > 0).length,
    images: imgs.length,
    images_drawn: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    code_cells: editors.length,
    code_visible: editors.filter(visible).length,
    scripts: Array.from(document.scripts).map(s => s.src || 'inline'),
    height: document.documentElement.scrollHeight,
  };
})()"""


class BrowserUnavailable(RuntimeError):
    """No chromium to start (the check needs Debian's `chromium` package)."""


@dataclass
class PageReport:
    """What a page did when loaded offline."""

    path: Path
    requests: list[str]
    text: str
    math: int
    math_drawn: int
    images: int
    images_drawn: int
    code_cells: int
    code_visible: int
    scripts: list[str]
    height: int
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def external_requests(self) -> list[str]:
        """Requests for anything but the page itself and inline data: what would leave the machine."""
        return [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)]

    @property
    def raw_math(self) -> list[str]:
        """Dollar-delimited snippets still visible as text (math that was not rendered)."""
        return re.findall(r"\$[^$\n]{1,60}\$", self.text)

    def problems(self) -> list[str]:
        """Why the page is not fit to share; empty when it is."""
        out = [f"request leaves the page: {url}" for url in self.external_requests]
        out += [f"raw math in the visible text: {s}" for s in self.raw_math[:5]]
        if self.math_drawn < self.math:
            out.append(f"{self.math - self.math_drawn} of {self.math} formulas not drawn")
        if self.images_drawn < self.images:
            out.append(f"{self.images - self.images_drawn} of {self.images} images not drawn")
        if self.code_visible:
            out.append(f"{self.code_visible} of {self.code_cells} code cells shown unfolded")
        if any(s != "inline" for s in self.scripts):
            out.append(f"external scripts: {[s for s in self.scripts if s != 'inline']}")
        return out


def chromium_path() -> str:
    """The chromium executable (``EOLAB_CHROMIUM`` overrides), or BrowserUnavailable saying why."""
    path = os.environ.get("EOLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise BrowserUnavailable("no chromium on PATH: `apt-get install -y chromium` (or set EOLAB_CHROMIUM)")
    return path


class Session:
    """A minimal CDP client over one page target's websocket: commands in order, events kept."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                return msg

    def close(self) -> None:
        self.ws.close()


@contextmanager
def browser() -> Iterator[str]:
    """Start headless chromium with an empty profile; yield its DevTools HTTP endpoint."""
    exe = chromium_path()
    profile = tempfile.mkdtemp(prefix="eolab-chromium-")
    # its own session, so that closing it reaches the renderer, GPU and crash-handler children
    # too: they outlive the browser process for a moment and still write into the profile
    proc = subprocess.Popen(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        endpoint = None
        for line in proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
            found = re.search(r"DevTools listening on ws://([^/]+)/", line)
            if found:
                endpoint = f"http://{found.group(1)}"
                break
        # keep reading chromium's log so that a full pipe never blocks it
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        if endpoint is None:
            raise BrowserUnavailable(f"{exe} exited ({proc.wait()}) before its DevTools endpoint came up")
        yield endpoint
    finally:
        _stop_group(proc)
        _remove_profile(Path(profile))


def _stop_group(proc: subprocess.Popen) -> None:
    """Terminate chromium and every process of its session; wait until none is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # is any process of the session still alive?
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.wait()


def _remove_profile(profile: Path) -> None:
    """Delete the throwaway profile; a straggling child may still add a file, so try a few times."""
    for attempt in range(5):
        shutil.rmtree(profile, ignore_errors=True)
        if not profile.exists():
            return
        time.sleep(0.2 * (attempt + 1))
    shutil.rmtree(profile, ignore_errors=True)


def check_page(html: str | Path, screenshot: str | Path | None = None, width: int = 1280,
               shot_height: int = 1600, endpoint: str | None = None, from_heading: str | None = None) -> PageReport:
    """Load `html` offline in headless chromium; record its requests and read back what it shows.

    With `screenshot`, `shot_height` px of the page (at `width` CSS px) are saved as PNG: from the
    top, or from the first heading whose text contains `from_heading`.
    Pass a running browser's `endpoint` (from `browser()`) to check several pages in one browser.
    """
    html = Path(html).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"page not found: {html}")
    if endpoint is None:
        with browser() as started:
            return check_page(html, screenshot, width, shot_height, started, from_heading)
    new_tab = urllib.request.Request(f"{endpoint}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(new_tab, timeout=30) as r:
        target = json.loads(r.read())
    cdp = Session(target["webSocketDebuggerUrl"])
    try:
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                 uploadThroughput=-1)
        cdp.send("Page.enable")
        cdp.send("Runtime.enable")
        cdp.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
        cdp.send("Page.navigate", url=html.as_uri())
        cdp.wait_for("Page.loadEventFired")
        cdp.send("Runtime.evaluate", expression="document.fonts.ready.then(() => true)", awaitPromise=True)
        state = cdp.send("Runtime.evaluate", expression=_PAGE_STATE, returnByValue=True)["result"]["value"]
        shot = None
        if screenshot is not None:
            shot = Path(screenshot)
            top = 0
            if from_heading:
                find = ("(() => { const h = Array.from(document.querySelectorAll('h1,h2,h3'))"
                        f".find(e => e.textContent.includes({json.dumps(from_heading)}));"
                        " return h ? h.getBoundingClientRect().top + window.scrollY - 10 : -1; })()")
                top = cdp.send("Runtime.evaluate", expression=find, returnByValue=True)["result"]["value"]
                if top < 0:
                    raise ValueError(f"{html}: no heading contains {from_heading!r}")
            height = min(shot_height, int(state["height"] - top))
            data = cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": top, "width": width, "height": height, "scale": 1})["data"]
            shot.parent.mkdir(parents=True, exist_ok=True)
            shot.write_bytes(base64.b64decode(data))
        requests = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
        errors = [str(e["params"]["exceptionDetails"].get("text")) for e in cdp.events
                  if e.get("method") == "Runtime.exceptionThrown"]
    finally:
        cdp.close()
        urllib.request.urlopen(f"{endpoint}/json/close/{target['id']}", timeout=30).close()
    return PageReport(path=html, requests=requests, console_errors=errors, screenshot=shot, **state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eolab.reports.pagecheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path, help="rendered HTML pages")
    parser.add_argument("--screenshot", action="store_true", help="write PAGE.png beside each page (its top)")
    parser.add_argument("--height", type=int, default=1600, help="screenshot height in CSS px (default 1600)")
    parser.add_argument("--from-heading", metavar="TEXT", help="screenshots start at the first heading containing TEXT")
    args = parser.parse_args(argv)
    bad = 0
    with browser() as endpoint:
        for page in args.pages:
            report = check_page(page, page.with_suffix(".png") if args.screenshot else None, endpoint=endpoint,
                                shot_height=args.height, from_heading=args.from_heading)
            problems = report.problems()
            bad += bool(problems)
            size = page.stat().st_size / 1e6
            print(f"{page}: {size:.2f} MB, {len(report.requests)} requests ({len(report.external_requests)} external), "
                  f"{report.math_drawn}/{report.math} formulas, {report.images_drawn}/{report.images} images, "
                  f"{report.code_cells - report.code_visible}/{report.code_cells} code cells folded" + (f", screenshot {report.screenshot}" if report.screenshot else ""))
            for problem in problems:
                print(f"  {problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
