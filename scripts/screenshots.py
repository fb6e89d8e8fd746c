"""The README's screenshots of the MLflow UI and the Optuna dashboard, from the store of `make demo`.

Run it in the folder `make demo` ran in (its mlflow.db and optuna.journal):

    .venv/bin/python scripts/screenshots.py [--out docs] [--experiment nscnet-demo] [--study demo-basenet]

It starts `nscnet ui --experiment EXPERIMENT` on loopback (ports 5077/8077), drives a headless
Chromium through the DevTools protocol (choreographer, which kaleido installs) and waits until
each page has drawn before it shoots (its charts present and two shots in a row alike), then
stops the UI. Three PNGs, 1400 x 900, into --out:

- mlflow-ui.png: the address `nscnet ui` prints (the experiment's training runs, charts view),
  the charts filtered to silhouette and nmi_truth and enlarged to fill the view;
- optuna-dashboard.png: the study's page (/dashboard/studies/<id>): its history plotted against
  the objective's name;
- optuna-trial.png: the study's best trial (/dashboard/studies/<id>/trials?numbers=<n>): its
  note linking the MLflow run and its user attributes mlflow_run_id / mlflow_run_url.

Needs Chromium (`apt-get install chromium`); says so in one line and exits 1 without it.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

WIDTH, HEIGHT = 1400, 900
MAX_BYTES = 400_000


def start_ui(experiment: str, mlflow_port: int, dashboard_port: int) -> tuple[subprocess.Popen, str, str]:
    """`nscnet ui` in its own process group; the two addresses it prints once both servers answer."""
    command = [sys.executable, "-m", "nscnet.cli", "ui", "--experiment", experiment,
               "--mlflow_port", str(mlflow_port), "--dashboard_port", str(dashboard_port)]
    ui = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    mlflow_url = dashboard_url = ""
    lines = []
    for line in ui.stdout:
        lines.append(line)
        if line.startswith("MLflow UI:"):
            mlflow_url = line.split(None, 2)[2].strip()
        elif line.startswith("Optuna dashboard:"):
            dashboard_url = line.split()[2]
        elif line.startswith("Press Ctrl-C"):
            break
    if not (mlflow_url and dashboard_url):
        stop_ui(ui)
        sys.exit("screenshots: nscnet ui did not start:\n" + "".join(lines))
    return ui, mlflow_url, dashboard_url


def stop_ui(ui: subprocess.Popen) -> None:
    if ui.poll() is None:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def study_pages(dashboard_url: str, study_name: str) -> tuple[str, str]:
    """The study's page and its best trial's page in the Optuna dashboard."""
    studies = get_json(f"{dashboard_url}/api/studies")["study_summaries"]
    ids = [s["study_id"] for s in studies if s["study_name"] == study_name]
    if not ids:
        sys.exit(f"screenshots: no study {study_name!r} in the Optuna storage "
                 f"(there are: {', '.join(s['study_name'] for s in studies) or 'none'})")
    study = get_json(f"{dashboard_url}/api/studies/{ids[0]}")
    best = study["best_trials"][0]["number"]
    return (f"{dashboard_url}/dashboard/studies/{ids[0]}",
            f"{dashboard_url}/dashboard/studies/{ids[0]}/trials?numbers={best}")


class Page:
    """One headless tab of WIDTH x HEIGHT CSS pixels, driven through the DevTools protocol."""

    def __init__(self, tab) -> None:
        self.tab = tab

    async def send(self, method: str, **params):
        response = await self.tab.send_command(method, params=params)
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response["result"]

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def wait_for(self, expression: str, what: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not there after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)

    async def type_into(self, selector: str, text: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def drag(self, selector: str, dx: float, dy: float) -> None:
        """Press the mouse on the first `selector`, move it by (dx, dy) in steps, release it."""
        x, y = await self.evaluate(f"(r => [r.x + r.width / 2, r.y + r.height / 2])"
                                   f"(document.querySelector({json.dumps(selector)}).getBoundingClientRect())")
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        await self.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        for step in range(1, 11):
            await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x + dx * step / 10, y=y + dy * step / 10,
                            button="left", buttons=1)
            await asyncio.sleep(0.05)
        await self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x + dx, y=y + dy, button="left",
                        clickCount=1)
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=1, y=HEIGHT - 1)  # off the charts

    async def shot(self, settle_s: float = 1.0, timeout_s: float = 60) -> bytes:
        """A PNG once two shots `settle_s` apart are alike (charts done drawing and animating)."""
        deadline = time.monotonic() + timeout_s
        previous = None
        while True:
            await asyncio.sleep(settle_s)
            png = base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"])
            if png == previous or time.monotonic() > deadline:
                return png
            previous = png


# At least n charts on the page, and each has drawn: its plotly SVG holds a trace.
DRAWN = "(n => (p => p.length >= n && p.every(e => e.querySelector('.trace')))([...document.querySelectorAll('.js-plotly-plot')]))"


CLOSE_ASSISTANT = """[...document.querySelectorAll('button[aria-label=Close]')].filter(b => {
    for (let e = b.parentElement, i = 0; e && i < 4; e = e.parentElement, i++)
        if (e.innerText.includes('MLflow Assistant')) return true;
    return false;
}).forEach(b => b.click())"""


async def mlflow_shot(page: Page, url: str) -> bytes:
    await page.goto(url)
    await page.wait_for(f"{DRAWN}(1)", "the MLflow charts view")
    # the MLflow Assistant side panel opens in a fresh browser: closed, it leaves the room to the charts
    await page.evaluate(CLOSE_ASSISTANT)
    # the chart search takes a regular expression
    await page.type_into("input[placeholder='Search metric charts']", "^(silhouette|nmi_truth)$")
    await page.wait_for(f"{DRAWN}(2) && document.querySelectorAll('.js-plotly-plot').length === 2",
                        "the silhouette and nmi_truth charts")
    await page.evaluate("document.activeElement.blur()")  # no text cursor in the shot
    # the cards are small by default: their resize handle dragged, both fill the charts area
    await page.drag("[data-testid=draggable-card-resize-handle]", 120, 120)
    await page.wait_for(f"{DRAWN}(2) && document.querySelector('.js-plotly-plot').getBoundingClientRect().width > 300",
                        "the two charts enlarged")
    return await page.shot()


async def optuna_study_shot(page: Page, url: str) -> bytes:
    await page.goto(url)
    await page.wait_for(f"{DRAWN}(1) && document.body.innerText.includes('History')", "the study's history plot")
    return await page.shot()


async def optuna_trial_shot(page: Page, url: str) -> bytes:
    await page.goto(url)
    await page.wait_for("document.body.innerText.includes('mlflow_run_url')", "the trial's user attributes")
    return await page.shot()


def save(png: bytes, path: Path) -> None:
    """Write `png` optimized; quantized to 256 colours when still over MAX_BYTES."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    data = io.BytesIO()
    image.save(data, "PNG", optimize=True)
    if data.tell() > MAX_BYTES:
        data = io.BytesIO()
        image.quantize(256).save(data, "PNG", optimize=True)
    path.write_bytes(data.getvalue())
    print(f"{path}  ({image.width} x {image.height}, {data.tell() // 1000} kB)")


async def shoot_all(pages: dict[str, str], out: Path) -> None:
    import choreographer

    async with choreographer.Browser(headless=True) as browser:
        page = Page(browser.get_tab())  # the tab the browser opens with
        await page.send("Page.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                        mobile=False)
        for name, (shoot, url) in pages.items():
            print(f"shooting {url}", flush=True)
            try:
                png = await shoot(page, url)
            except TimeoutError:
                failed = out / name.replace(".png", ".failed.png")
                failed.write_bytes(base64.b64decode((await page.send("Page.captureScreenshot"))["data"]))
                print(f"screenshots: the page as it was: {failed}", file=sys.stderr)
                raise
            save(png, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"),
                        help="folder of the three PNGs (default: the repository's docs/)")
    parser.add_argument("--experiment", default=os.environ.get("NSCNET_EXPERIMENT", "nscnet-demo"))
    parser.add_argument("--study", default="demo-basenet")
    parser.add_argument("--mlflow_port", type=int, default=5077)
    parser.add_argument("--dashboard_port", type=int, default=8077)
    args = parser.parse_args()
    if not (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")):
        sys.exit("screenshots: needs Chromium (apt-get install chromium)")
    for store in ("mlflow.db", "optuna.journal"):
        if not Path(store).is_file():
            sys.exit(f"screenshots: no {store} here; run it in the folder `make demo` ran in")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ui, mlflow_url, dashboard_url = start_ui(args.experiment, args.mlflow_port, args.dashboard_port)
    try:
        study_url, trial_url = study_pages(dashboard_url, args.study)
        asyncio.run(shoot_all({"mlflow-ui.png": (mlflow_shot, mlflow_url),
                               "optuna-dashboard.png": (optuna_study_shot, study_url),
                               "optuna-trial.png": (optuna_trial_shot, trial_url)}, out))
    finally:
        stop_ui(ui)


if __name__ == "__main__":
    main()
