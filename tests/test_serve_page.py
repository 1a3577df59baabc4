"""The page at ``GET /`` and its search endpoint, over real HTTP on the shared local cluster; then the page in
a real headless browser (Debian's ``chromium``; skipped, saying why, where none is installed): the DOM after
its scripts ran lists searched items and the model's metadata, and its screenshot is a PNG that is not blank."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

from raygr.config import ServeConfig
from raygr.distributed.serve import build_app, run_app
from raygr.serving.client import Client
from tests.helpers import tiny_dataset
from tests.serving_helpers import tiny_checkpoint

pytestmark = pytest.mark.ray

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


@pytest.fixture(scope="module")
def page(ray_cluster, tmp_path_factory):
    from ray import serve

    root = tmp_path_factory.mktemp("page")
    ds = tiny_dataset(root, num_users=200)
    run = tiny_checkpoint(ds, root / "joint")
    port = free_port()
    cfg = ServeConfig(min_replicas=1, max_replicas=1, port=port)
    client = Client(f"http://127.0.0.1:{port}")
    try:
        run_app(build_app(run, ds.root, cfg), cfg, log_level="WARNING")
        client.wait_healthy()
        yield {"url": f"http://127.0.0.1:{port}", "ds": ds, "client": client}
    finally:
        client.close()
        serve.shutdown()


def test_the_page_is_self_contained_html(page):
    status, ctype, html = get(page["url"] + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert "<script>" in html and 'id="search"' in html and "recommend" in html
    # No CDN or other host: the page works on a machine without internet.
    assert "http://" not in html and "https://" not in html and "src=" not in html


def test_search_finds_items_by_title_words_and_looks_up_ids(page):
    import json

    ds, url = page["ds"], page["url"]
    title, item_id = ds.items.title[5], ds.items.item_id[5]
    words = title.split()[:2]
    status, _, body = get(f"{url}/search?q={'+'.join(words)}&limit=100")
    found = json.loads(body)["items"]
    assert status == 200 and {"item_id": item_id, "title": title} in found
    assert all(all(w.lower() in f["title"].lower() for w in words) for f in found)
    status, _, body = get(f"{url}/search?q=&limit=3")  # empty query: the 3 most popular items
    assert status == 200 and len(json.loads(body)["items"]) == 3
    status, _, body = get(f"{url}/search?ids={item_id}&ids=nope")  # exact look-up; unknown ids left out
    assert json.loads(body)["items"] == [{"item_id": item_id, "title": title}]
    assert get(f"{url}/search?q=x&limit=0")[0] == 422
    assert json.loads(get(f"{url}/search?q=zzzz-no-such-title")[2])["items"] == []


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def headless(exe: str, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=8000", *args], capture_output=True, text=True,
                          timeout=BROWSER_TIMEOUT_S)


@pytest.fixture(scope="module")
def exe():
    """The browser (module-scoped and named first, so that without one the test skips before deploying)."""
    found = browser()
    if found is None:
        pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)} on PATH); "
                    "`apt-get install -y chromium` (as .ci/run does) to run this test")
    return found


def test_the_page_runs_in_a_headless_browser(exe, page, tmp_path):
    url = page["url"] + "/"
    # The DOM after the page's scripts ran: metadata shown, the popular items listed by the first search.
    dom = headless(exe, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "joint on tiny" in dom.stdout, dom.stdout[-2000:]
    assert page["ds"].items.title[0].split()[0] in dom.stdout or "<li>" in dom.stdout
    shot = tmp_path / "page.png"
    res = headless(exe, f"--screenshot={shot}", "--window-size=1000,800", url)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]  # [H, W, 3] floats in 0..1
    assert pixels.shape[:2] == (800, 1000)
    dark = (pixels.mean(-1) < 0.5).mean()  # text covers part of the page, not all of it
    assert 0.002 < dark < 0.5 and float(np.std(pixels)) > 0.05, (dark, float(np.std(pixels)))
