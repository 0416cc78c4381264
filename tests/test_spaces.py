"""The demo Spaces and the metric Spaces' widgets, seen working in a real browser: each app is started on loopback
as a Space runs it (`python app.py`), driven in headless Chromium (selenium), its example submitted, and the answer
on the page compared with the same call made here. Screenshots go to $RETRIEVAL_POLICIES_SCREENSHOTS when set (the
docs' come from there); $RETRIEVAL_POLICIES_SPACE_GRACE / $RETRIEVAL_POLICIES_SPACE_DYNAMICRAG name trained model
folders to run the Spaces on instead of tiny random ones (the docs' screenshots show the demo's trained models)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from testing_utils import PACKAGED_METRICS, PACKAGED_SPACES, tiny_llama

from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel
from retrieval_policies.models.grace import GraceConfig, GraceEmbedder

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="Debian's chromium and chromium-driver are not installed (the Makefile installs "
        "them where apt-get is available and it runs as root)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """``python app.py`` of a Space folder on a free loopback port, as a Space runs it."""

    def __init__(self, app: Path, env: dict, tmp_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = tmp_path / f"{app.parent.name}-app.log"
        env = {
            **os.environ,
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            **env,
        }
        with self.log.open("w") as handle:
            self.process = subprocess.Popen(
                [sys.executable, str(app)], cwd=app.parent, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{app} exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{app} did not answer on {self.url}:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module's apps (each test opens its own app's URL)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        "--window-size=1280,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _submit_and_read(browser, url: str, output_css: str, *, timeout: float = 240) -> str:
    """Open the app, click its #run button, and wait for the output textarea to be filled; its value."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 120).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#run"))).click()
    output = WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, output_css)))
    WebDriverWait(browser, timeout).until(lambda _: output.get_attribute("value"))
    return output.get_attribute("value")


def _screenshot(browser, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RETRIEVAL_POLICIES_SCREENSHOTS"):
        keep = Path(os.environ["RETRIEVAL_POLICIES_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep / path.name)
    return path


def _load_app_module(folder: Path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"space_app_{folder.name}", folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grace_space_in_a_browser(tokenizer, tmp_path, browser, monkeypatch):
    from selenium.webdriver.support.ui import WebDriverWait

    folder = Path(os.environ.get("RETRIEVAL_POLICIES_SPACE_GRACE") or tmp_path / "grace-tiny").resolve()
    if not folder.exists():
        GraceEmbedder(tiny_llama(tokenizer, layers=2).eval(), tokenizer, GraceConfig(temperature=0.0)).save_pretrained(
            folder
        )
    monkeypatch.setenv("MODEL_REPO", str(folder))
    app_module = _load_app_module(PACKAGED_SPACES / "grace", monkeypatch)
    matrix, expected = app_module.embed(app_module.EXAMPLE, 32)  # the same call, made here
    app = App(PACKAGED_SPACES / "grace" / "app.py", {"MODEL_REPO": str(folder)}, tmp_path)
    try:
        shown = _submit_and_read(browser, app.url, "#rationales textarea")
        assert shown == expected and len(shown.splitlines()) == 3 and matrix.shape == (3, 4)
        table = browser.find_element("css selector", "#matrix").text.split("\n")
        assert table[0] == "Cosine similarity"  # and every similarity the app computed is on the page
        assert all(f"{value:g}" in table for value in matrix.drop(columns="text").to_numpy().ravel())
        hits = app_module.explain(app_module.EXAMPLE, 32)  # "why does each text match the first?"
        browser.find_element("css selector", "#why").click()
        WebDriverWait(browser, 120).until(
            lambda b: all(t in b.find_element("css selector", "#hits").text for t in hits["text"])
        )
        shown = browser.find_element("css selector", "#hits").text
        assert all(f"{score:g}" in shown for score in hits["score"]) and "shared" in shown
        _screenshot(browser, tmp_path, "space-grace")
    finally:
        app.stop()


def test_dynamicrag_space_in_a_browser(tokenizer, tmp_path, browser, monkeypatch):
    folder = Path(os.environ.get("RETRIEVAL_POLICIES_SPACE_DYNAMICRAG") or tmp_path / "dynamicrag-tiny").resolve()
    if not folder.exists():
        DynamicRAGModel(
            tiny_llama(tokenizer, layers=2).eval(),
            tokenizer,
            DynamicRAGConfig(rerank_max_new_tokens=8, answer_max_new_tokens=8, temperature=0.0),
        ).save_pretrained(folder)
    monkeypatch.setenv("MODEL_REPO", str(folder))
    app_module = _load_app_module(PACKAGED_SPACES / "dynamicrag", monkeypatch)
    table, expected = app_module.rerank_and_answer(app_module.QUESTION, app_module.PASSAGES)
    assert expected  # a random model still writes a few tokens: an empty answer could not be told from none
    app = App(PACKAGED_SPACES / "dynamicrag" / "app.py", {"MODEL_REPO": str(folder)}, tmp_path)
    try:
        assert _submit_and_read(browser, app.url, "#answer textarea") == expected
        shown = browser.find_element("css selector", "#selected").text
        assert all(str(title) in shown for title in table["title"])  # the selected passages, as the app returned them
        _screenshot(browser, tmp_path, "space-dynamicrag")
    finally:
        app.stop()


@pytest.mark.parametrize("metric", ["rag_answer", "rerank_selection", "retrieval"])
def test_metric_space_widget_in_a_browser(metric, tmp_path, browser):
    """Each metric Space as pushed (its app.py next to the widget it imports), its card's first example computed."""
    import evaluate
    import yaml

    staged = tmp_path / metric
    shutil.copytree(PACKAGED_METRICS / metric, staged)
    shutil.copy(PACKAGED_METRICS / "metric_widget.py", staged / "metric_widget.py")
    example = yaml.safe_load((staged / "card.yaml").read_text())["examples"][0]["kwargs"]
    expected = json.loads(json.dumps(evaluate.load(str(staged)).compute(**example)))
    app = App(staged / "app.py", {}, tmp_path)
    try:
        assert json.loads(_submit_and_read(browser, app.url, "#result textarea")) == expected
        _screenshot(browser, tmp_path, f"space-metric-{metric}")
    finally:
        app.stop()
