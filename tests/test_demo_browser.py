"""The demo in a real browser: headless Chromium opens the page, uploads a sample image,
clicks Restore, waits for the result and checks it; saves a screenshot.

The demo is started the way a user starts it, ``python -m diffusers_mrs.cli demo`` (the
shipped default model, 127.0.0.1, a free port), in a subprocess. Chromium is driven by
Selenium with Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs
them). Where the browser or its driver is missing or cannot start, the test is skipped
with the reason.

The README screenshot is made by this test:

    DIFFUSERS_MRS_DEMO_SCREENSHOT=docs/demo.png HF_HUB_OFFLINE=1 python -m pytest -q \\
        tests/test_demo_browser.py
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import free_port, wait_until_serving

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "images" / "flower_lowlight.png"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")
START_TIMEOUT_S, RESTORE_TIMEOUT_S = 300, 300


def find(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return next((p for p in extra if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    log = tmp_path_factory.mktemp("server") / "demo.log"
    with open(log, "w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "diffusers_mrs.cli", "demo", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, text=True,
        )
        try:
            wait_until_serving(f"http://127.0.0.1:{port}/", proc, START_TIMEOUT_S, log)
            yield f"http://127.0.0.1:{port}/"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture()
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    binary = find(CHROMIUM)
    driver_path = find(DRIVERS, ("/usr/lib/chromium/chromedriver",))
    if binary is None or driver_path is None:
        pytest.skip(
            "headless Chromium is not available (need `chromium` and `chromedriver` on PATH;"
            " Debian: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1500"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as err:  # the browser exists but cannot start here: say why
        pytest.skip(f"headless Chromium could not start: {type(err).__name__}: {err}")
    try:
        yield driver
    finally:
        driver.quit()


def default_model_degradations() -> list[str] | None:
    """The degradation types of the shipped default model, ``None`` if it has no encoder."""
    config = REPO / "diffusers_mrs" / "default_model" / "degradation_encoder" / "config.json"
    return json.loads(config.read_text())["degradations"] if config.is_file() else None


def fetch_image(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return np.asarray(Image.open(io.BytesIO(resp.read())).convert("RGB"), dtype=np.float64)


def test_upload_restore_and_see_the_result(demo_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(demo_url)
    wait = WebDriverWait(browser, 120)
    upload = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]"))
    )
    upload.send_keys(str(SAMPLE))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
    browser.find_element(By.CSS_SELECTOR, "button#restore").click()

    WebDriverWait(browser, RESTORE_TIMEOUT_S).until(
        lambda d: "NFE" in d.find_element(By.CSS_SELECTOR, "#result-info").text
    )
    info = browser.find_element(By.CSS_SELECTOR, "#result-info").text
    assert "MR Sampler" in info and "NFE 10" in info, info
    shown = browser.find_elements(By.CSS_SELECTOR, "#result-slider img")
    assert len(shown) == 2
    before, after = (fetch_image(img.get_attribute("src")) for img in shown)
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float64)
    assert before.shape == after.shape == sample.shape
    assert np.array_equal(before, sample)  # the slider's left side is the upload itself
    assert np.abs(after - before).mean() > 5.0, "the restored image equals the input"
    assert after.std() > 10.0, "the restored image is blank"
    assert browser.find_element(By.CSS_SELECTOR, "#download").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#uncertainty img")
    types = default_model_degradations()
    if types is not None:  # a degradation-aware default model: its detected type is shown
        label = browser.find_element(By.CSS_SELECTOR, "#degradation").text
        assert any(t in label for t in types), label

    # An ensemble of 4 faithful samples: the uncertainty map appears.
    browser.find_element(By.XPATH, "//label[contains(., 'faithful samples')]").click()
    samples = browser.find_element(By.CSS_SELECTOR, "#samples input[type=number]")
    samples.clear()
    samples.send_keys("4", Keys.TAB)
    browser.find_element(By.CSS_SELECTOR, "button#restore").click()
    WebDriverWait(browser, RESTORE_TIMEOUT_S).until(
        lambda d: "4 samples" in d.find_element(By.CSS_SELECTOR, "#result-info").text
        and d.find_elements(By.CSS_SELECTOR, "#uncertainty img")
    )
    assert "faithful samples" in browser.find_element(By.CSS_SELECTOR, "#result-info").text
    std_map = fetch_image(browser.find_element(By.CSS_SELECTOR, "#uncertainty img")
                          .get_attribute("src"))
    assert std_map.shape[1] >= sample.shape[1] and std_map.std() > 10.0

    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(1)  # let the slider and the map finish drawing
    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0
    target = os.environ.get("DIFFUSERS_MRS_DEMO_SCREENSHOT")
    if target:  # 256 colours: a third of the size, for the README
        Image.open(shot).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
            target, optimize=True
        )
