"""`refseg serve` in a real browser: headless Chromium (Debian's chromium and chromium-driver, which
`make test` installs when absent) drives the page through Selenium against a real server with
the embedded models. It opens a generated SynthRef clip, types an expression, clicks a point on
another object, runs, waits for the streamed masks, checks the page draws them, and checks that
the masks it downloads are the ones `refseg segment` writes for the same inputs.

With REFSEG_SCREENSHOTS=DIR set, the page before and after the run is saved there
(`serve_before.png`, `serve_after.png`; docs/ holds the ones the README shows).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from refseg.cli import main
from refseg.data.clicks import next_click
from refseg.demo import demo_scene
from refseg.io import VideoWriter
from refseg.io.masks import read_mask_png
from refseg.models import load
from refseg.sam.checkpoint import load_sam2
from refseg.serve import Methods, ServeConfig, create_app

pytestmark = pytest.mark.slow
FRAMES = 12


def browser() -> webdriver.Chrome:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):  # `make test` installs them; a missing browser is a broken setup, not a pass
        raise RuntimeError("this test needs Debian's chromium and chromium-driver: `make test` installs them "
                           "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                 "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server (uvicorn in a thread) with the embedded SAMWISE and SynthRef SAM 2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Methods.of([load("default"), load_sam2("synth")]),
                     ServeConfig(jobs_dir=tmp_path_factory.mktemp("jobs")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The demo's SynthRef scene, first FRAMES frames, as a lossless H.264 file; and the scene."""
    sample = demo_scene(FRAMES)
    path = tmp_path_factory.mktemp("clip") / "scene.mp4"
    with VideoWriter(path, fps=10, crf=0) as writer:
        for frame in sample.load_frames():
            writer.write(frame)
    return path, sample


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def canvas_pixels(driver: webdriver.Chrome, size: tuple[int, int]) -> np.ndarray:
    """The canvas as shown, scaled back to the frame's `size` (W, H): [H, W, 3] int."""
    shot = Image.open(io.BytesIO(driver.find_element(By.ID, "view").screenshot_as_png)).convert("RGB")
    return np.asarray(shot.resize(size, Image.Resampling.BILINEAR)).astype(int)


def test_the_page_segments_by_text_and_click_and_downloads_what_the_cli_writes(server, clip, tmp_path):
    path, sample = clip
    frame0 = sample.load_frames()[0]
    height, width = frame0.shape[:2]
    expression = next(e for e in sample.expressions if "appearance" in e.phenomena)  # "the white circle"
    text_target = sample.target_mask(expression)[0]
    other = next(o for o, m in sorted(sample.masks.items()) if m[0].any() and not (m[0] & text_target).any())
    click_x, click_y, _ = next_click(sample.masks[other][0], np.zeros_like(sample.masks[other][0]))
    shots = Path(os.environ["REFSEG_SCREENSHOTS"]) if os.environ.get("REFSEG_SCREENSHOTS") else None

    driver = browser()
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server)
        wait.until(lambda d: d.find_element(By.ID, "text-method").text.strip() != "")
        corrupt = tmp_path / "corrupt.mp4"
        corrupt.write_bytes(bytes(range(256)) * 20)
        driver.find_element(By.ID, "file").send_keys(str(corrupt))
        wait.until(lambda d: "corrupt.mp4: cannot open as a video" in d.find_element(By.ID, "error").text)
        driver.find_element(By.ID, "file").send_keys(str(path))
        wait.until(lambda d: d.find_element(By.ID, "view").get_attribute("data-shown") == "frame-0")
        assert driver.find_element(By.ID, "error").text == ""

        driver.find_element(By.ID, "text").send_keys(expression.text)
        driver.find_element(By.ID, "add-text").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#objects li")) == 1)
        driver.find_element(By.ID, "new-object").click()
        canvas = driver.find_element(By.ID, "view")
        shown = canvas.rect
        ActionChains(driver).move_to_element_with_offset(
            canvas, (click_x + 0.5) * shown["width"] / width - shown["width"] / 2,
            (click_y + 0.5) * shown["height"] / height - shown["height"] / 2).click().perform()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#objects li")) == 2)
        assert driver.find_element(By.ID, "error").text == ""
        job_id = driver.execute_script("return state.job.id")
        job = get_json(f"{server}/api/jobs/{job_id}")
        (x, y, label), = job["objects"][1]["prompts"]["0"][0]["points"]
        assert label == 1 and abs(x - click_x) < 2 and abs(y - click_y) < 2
        wait.until(lambda d: d.find_element(By.ID, "view").get_attribute("data-shown") == "frame-0")
        before = canvas_pixels(driver, (width, height))
        if shots:
            driver.save_screenshot(str(shots / "serve_before.png"))

        driver.find_element(By.ID, "run").click()
        WebDriverWait(driver, 60, poll_frequency=0.02).until(
            lambda d: get_json(f"{server}/api/jobs/{job_id}")["state"] in ("running", "done", "failed"))
        began = time.perf_counter()  # answered while the run works
        state = get_json(f"{server}/api/jobs/{job_id}")["state"]
        waits = [time.perf_counter() - began]
        began = time.perf_counter()
        get_json(f"{server}/api/config")
        waits.append(time.perf_counter() - began)
        assert state == "running", "the run ended before the requests were timed"
        assert max(waits) < 1.0, f"requests waited on the run: {waits}"
        WebDriverWait(driver, 300).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-run")
                                         in ("done", "failed", "stopped"))
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-run") == "done", \
            driver.find_element(By.ID, "error").text
        assert driver.find_element(By.ID, "progress").get_attribute("value") == str(FRAMES)
        assert "frames/s" in driver.find_element(By.ID, "fps").text
        wait.until(lambda d: d.find_element(By.ID, "dl-zip").is_displayed())

        driver.execute_script("const s = document.getElementById('slider'); s.value = 0;"
                              "s.dispatchEvent(new Event('input'));")
        wait.until(lambda d: d.find_element(By.ID, "view").get_attribute("data-shown") == "overlay-0")
        after = canvas_pixels(driver, (width, height))
        if shots:
            driver.save_screenshot(str(shots / "serve_after.png"))
        archive_url = driver.find_element(By.ID, "dl-zip").get_attribute("href")
    finally:
        driver.quit()

    with urllib.request.urlopen(archive_url, timeout=30) as response:
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    served = tmp_path / "served"
    archive.extractall(served)
    by_text, by_click = tmp_path / "text", tmp_path / "click"
    assert main(["segment", str(path), "--text", expression.text, "--out", str(by_text)]) == 0
    assert main(["segment", str(path), "--sam2", "synth", "--points", f"{x!r},{y!r}", "--out", str(by_click)]) == 0
    for cli_out, cli_id, served_id in ((by_text, 1, 1), (by_click, 1, 2)):
        names = sorted(p.name for p in (cli_out / "masks" / str(cli_id)).iterdir())
        assert names == sorted(p.name for p in (served / "masks" / str(served_id)).iterdir())
        assert len(names) == FRAMES
        for name in names:
            assert np.array_equal(read_mask_png(cli_out / "masks" / str(cli_id) / name),
                                  read_mask_png(served / "masks" / str(served_id) / name)), (served_id, name)

    clicked = read_mask_png(served / "masks" / "2" / "00000.png")
    yy, xx = np.mgrid[:height, :width]
    away = clicked & ((xx - x) ** 2 + (yy - y) ** 2 > 12**2)  # not under the click's marker
    assert away.sum() > 20, "the clicked object got no mask"
    assert np.abs(after[away] - before[away]).mean() > 25  # the mask is drawn where the object is
