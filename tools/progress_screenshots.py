"""Screenshots of a training run's progress, as a user sees it: in a terminal (the `ablate` line and
Lightning's bar of `launch`) and in JupyterLab (the bar as a widget under the training cell).

    python tools/progress_screenshots.py [--out docs/img]

Each one runs the quick preset for real (about a minute of training on 2 cores) and captures the screen
mid-training: the terminals through tmux (`capture-pane -e` keeps the colours; rich turns them into an
HTML page that headless Chromium photographs), JupyterLab by starting `jupyter lab` on 127.0.0.1,
opening a notebook with the quick parameters in headless Chromium and running all its cells.
Needs tmux, chromium and a data root; writes PNGs only (nothing else changes in the repository).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eolab.reports.pagecheck import Session, browser, check_page  # noqa: E402

QUICK = REPO / "ablations" / "quick.yaml"


def quick_params() -> dict:
    import yaml

    spec = yaml.safe_load(QUICK.read_text())
    return {**spec["base"], **{k: v[0] for k, v in spec["grid"].items()}, "seed": spec["seeds"][0]}


def terminal_shot(command: str, out: Path, wait_for: str, workdir: Path, cols: int = 150, rows: int = 16,
                  settle_s: float = 5.0, timeout_s: float = 900) -> None:
    """Run `command` in a detached tmux session; when the screen shows `wait_for`, photograph it."""
    session = f"eolab-shot-{secrets.token_hex(3)}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(cols), "-y", str(rows), "-c", str(workdir),
                    f"{command}; sleep 600"], check=True, env={**os.environ, "CI": "", "TERM": "xterm-256color"})
    try:
        deadline, screen = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            time.sleep(1.0)
            screen = subprocess.run(["tmux", "capture-pane", "-e", "-p", "-t", session], capture_output=True,
                                    text=True, check=True).stdout
            if wait_for in screen:
                # a few more refreshes (a rate, a time left), keeping the last screen that still shows it
                until = time.monotonic() + settle_s
                while time.monotonic() < until:
                    time.sleep(0.5)
                    later = subprocess.run(["tmux", "capture-pane", "-e", "-p", "-t", session], capture_output=True,
                                           text=True, check=True).stdout
                    if wait_for not in later:
                        break
                    screen = later
                break
        else:
            raise TimeoutError(f"{command!r} never showed {wait_for!r}; last screen:\n{screen}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=cols, file=open(os.devnull, "w"), force_terminal=True, color_system="truecolor")
    console.print(Text.from_ansi(screen.rstrip("\n")))
    html = Path(tempfile.mkdtemp()) / "terminal.html"
    page = console.export_html(inline_styles=True, code_format=(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{{margin:0;background:#1e1e1e;}}"
        "pre{{margin:0;padding:12px;font-family:'DejaVu Sans Mono',monospace;font-size:13px;color:#e0e0e0;"
        "background:#1e1e1e;white-space:pre;}}</style></head><body><h1 style='display:none'>terminal</h1>"
        "<pre>{code}</pre></body></html>"))
    html.write_text(page)
    check_page(html, out, width=int(cols * 8.2) + 24, shot_height=rows * 18 + 30)
    print(f"{out}: {command}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyterlab_shot(out: Path, workdir: Path, timeout_s: float = 900) -> None:
    """Open the pre-training notebook (quick parameters) in JupyterLab, run all cells, photograph the bar."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(REPO / "notebooks" / "pretrain.ipynb")),
                               {**quick_params(), "output_dir": str(workdir / "run"), "progress": "bar"})
    nbformat.write(nb, workdir / "quick.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workdir}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=", "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "CI": "", "PYTHONPATH": str(REPO)})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        with browser() as endpoint:
            req = urllib.request.Request(f"{endpoint}/json/new?about:blank", method="PUT")
            with urllib.request.urlopen(req, timeout=30) as r:
                target = json.loads(r.read())
            cdp = Session(target["webSocketDebuggerUrl"])
            cdp.send("Page.enable")
            cdp.send("Runtime.enable")
            cdp.send("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
            # a headless tab has no focus, and JupyterLab tracks the current notebook by focus events:
            # without these, its commands see no notebook to act on
            cdp.send("Emulation.setFocusEmulationEnabled", enabled=True)
            cdp.send("Page.bringToFront")
            cdp.send("Page.navigate", url=f"{base}/lab/tree/quick.ipynb?token={token}")

            def js(expr: str):
                return cdp.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)["result"].get("value")

            def wait(expr: str, what: str, limit: float) -> None:
                deadline = time.monotonic() + limit
                while not js(expr):
                    if time.monotonic() > deadline:
                        shot = out.with_suffix(".failed.png")
                        shot.write_bytes(base64.b64decode(cdp.send("Page.captureScreenshot", format="png")["data"]))
                        raise TimeoutError(f"JupyterLab: {what} did not happen within {limit:.0f} s (screen: {shot}; "
                                           f"{js('location.href')}: {str(js('document.body.innerText'))[:300]!r})")
                    time.sleep(1.0)

            wait("!!document.querySelector('.jp-Notebook .jp-Cell') && "
                 "!!document.querySelector('.jp-Notebook-ExecutionIndicator, .jp-Toolbar')", "the notebook opening", 180)
            # no need to wait for the kernel: JupyterLab queues the cells until it is ready
            # JupyterLab asks once whether to fetch its news; say no, so the question hides nothing
            js("(() => { const b = Array.from(document.querySelectorAll('button')).find(e => e.textContent.trim() === 'No');"
               " if (b) b.click(); return true; })()")
            time.sleep(2.0)
            # Lumino's menus answer to DOM pointer events: hover the item, then press it
            press = ("const press = (el) => { const r = el.getBoundingClientRect();"
                     " for (const type of ['pointermove', 'mousemove', 'pointerdown', 'mousedown', 'pointerup', 'mouseup', 'click'])"
                     " el.dispatchEvent(new (type.startsWith('pointer') ? PointerEvent : MouseEvent)(type,"
                     " {bubbles: true, cancelable: true, clientX: r.x + 5, clientY: r.y + 5, button: 0})); };")
            run_all = ("(() => { " + press +
                       " const bar = Array.from(document.querySelectorAll('.lm-MenuBar-item')).find(e => e.textContent.trim() === 'Run');"
                       " if (!bar) return 'no Run menu';"
                       " if (!document.querySelector('.lm-Menu')) { press(bar); return 'opened'; }"
                       " const item = Array.from(document.querySelectorAll('.lm-Menu-item')).find("
                       "   e => /^Run All( Cells)?$/.test((e.querySelector('.lm-Menu-itemLabel') || {}).textContent || ''));"
                       " if (!item) return 'no Run All item';"
                       " if (item.classList.contains('lm-mod-disabled')) { press(bar); return 'disabled'; }"
                       " press(item); return 'ok'; })()")
            deadline, said = time.monotonic() + 180, ""
            while time.monotonic() < deadline:
                said = js(run_all)
                if said == "ok":
                    break
                time.sleep(1.0)
            if said != "ok":
                shot = out.with_suffix(".failed.png")
                shot.write_bytes(base64.b64decode(cdp.send("Page.captureScreenshot", format="png")["data"]))
                raise RuntimeError(f"JupyterLab: could not run the notebook's cells ({said}; screen: {shot})")
            # the widget bar: tqdm's HBox with a progress bar, once it shows a step and a rate
            wait("Array.from(document.querySelectorAll('.jp-OutputArea-output')).some(e => "
                 "e.querySelector('.widget-progress, progress, .progress') && /it\\/s|s\\/it|img\\/s/.test(e.textContent))",
                 "the progress bar showing a rate", timeout_s)
            # room for the notebook: fold the file browser away; and answer JupyterLab's news question
            js("(() => { " + press + " const tab = document.querySelector('.jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current');"
               " if (tab) press(tab); const no = Array.from(document.querySelectorAll('button'))"
               ".find(e => e.textContent.trim() === 'No'); if (no) no.click(); return true; })()")
            time.sleep(3.0)
            top = js("(() => { const e = Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                     ".find(e => e.querySelector('.widget-progress, progress, .progress'));"
                     " e.scrollIntoView({block: 'center'}); return true; })()")
            assert top
            time.sleep(1.0)
            data = cdp.send("Page.captureScreenshot", format="png")["data"]
            out.write_bytes(base64.b64decode(data))
            js("window.jupyterapp && window.jupyterapp.commands.execute('kernelmenu:interrupt')")
            cdp.close()
        print(f"{out}: JupyterLab {base}/lab/tree/quick.ipynb")
    finally:
        os.killpg(lab.pid, 15)
        lab.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="folder for the PNGs (default docs/img)")
    parser.add_argument("--only", choices=["ablate", "launch", "jupyterlab"], nargs="+",
                        default=["ablate", "launch", "jupyterlab"])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    py = shlex_quote(sys.executable)
    with tempfile.TemporaryDirectory(prefix="eolab-shots-") as tmp:
        work = Path(tmp)
        if "ablate" in args.only:
            terminal_shot(f"cd {shlex_quote(str(REPO))} && {py} -m eolab ablate ablations/quick.yaml --force "
                          f"--results-root {shlex_quote(str(work / 'results'))}", args.out / "progress-ablate.png",
                          wait_for="img/s", workdir=REPO, rows=6)
        if "launch" in args.only:
            params = work / "quick.json"
            params.write_text(json.dumps({**quick_params(), "output_dir": str(work / "launch"), "progress": "bar"}))
            terminal_shot(f"cd {shlex_quote(str(REPO))} && {py} -m eolab.launch {shlex_quote(str(params))}",
                          args.out / "progress-launch.png", wait_for="img/s", workdir=REPO, rows=8, settle_s=1.0)
        if "jupyterlab" in args.only:
            (work / "lab").mkdir()
            jupyterlab_shot(args.out / "progress-jupyterlab.png", work / "lab")
    return 0


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


if __name__ == "__main__":
    raise SystemExit(main())
