"""The web page in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (no browser is downloaded), against the real service on the simulated
camera. What a person does: open it, watch, hold a tile, delete a sample, pause and resume,
go back to a checkpoint; at phone and desktop width, with a class name that is markup."""

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("gpiozero")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium "
                                "(pip install 'pi-backprop[test]')")

from running_service import DEADLINE, checkpoint_files, running, wait_for, write_config  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service as DriverService  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from pi_backprop.storage.store import SampleStore  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip("the browser tests need Debian's chromium and chromium-driver "
                "(sudo apt-get install chromium chromium-driver)", allow_module_level=True)

# Where the screenshots go (CI keeps them; a person looks at them): PI_BACKPROP_SCREENSHOTS or tmp.
SCREENSHOTS = os.environ.get("PI_BACKPROP_SCREENSHOTS")
MARKUP_CLASS = '<img src=x onerror="document.title=\'pwned\'">'
CAMERA = {"model": {"name": "camera_cnn"}, "source": {"kind": "simulated-camera", "interval": 0.05},
          "labels": {"simulated": False},
          "training": {"burst_steps": 5, "min_samples_per_class": 2, "batch_size": 16, "lr": 0.002,
                       "checkpoint_every_steps": 40, "checkpoint_every_seconds": 1, "min_checkpoint_seconds": 0,
                       "keep": 50},
          "store": {"write_every_seconds": 0}, "service": {"status_interval": 0.2}, "web": {"port": 0, "fps": 5}}


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(DEADLINE)
    try:
        yield driver
    finally:
        driver.quit()


def model_with_markup_class(tmp_path):
    """camera_cnn with its last class named as markup (what a careless config could give)."""
    text = (Path(__file__).resolve().parents[2] / "models" / "camera_cnn.toml").read_text()
    path = tmp_path / "markup_cnn.toml"
    path.write_text(text.replace('"x"]', '"' + MARKUP_CLASS.replace('"', '\\"') + '"]', 1))
    return str(path)


def stored_labels(state):
    with SampleStore(state / "samples.db", readonly=True) as store:
        return store.load_arrays("all")[1].tolist()


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(driver, service):
    wait_for(lambda: service.web is not None, what="the web page")
    driver.get(f"http://127.0.0.1:{service.web.port}/")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#tiles .tile"), what="the class tiles")


def at_width(driver, width, height):
    """The page laid out at ``width`` CSS pixels, as a phone's browser would (a headless
    window has a minimum width wider than a phone's)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 800})
    time.sleep(1.0)


def screenshot(driver, tmp_path, name):
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"web-page-{name}.png"
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000   # a page, not a blank
    return path


def test_a_new_user_watches_teaches_deletes_pauses_and_goes_back(tmp_path, browser):
    state = tmp_path / "state"
    config = write_config(tmp_path / "c.toml", CAMERA, model={"name": model_with_markup_class(tmp_path)})
    with running(config, state) as service:
        open_page(browser, service)
        assert browser.title == "pi-backprop"

        # The live frame changes.
        camera = browser.find_element(By.ID, "camera")
        wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", camera) == 320,
                 what="the first frame")
        first = camera.screenshot_as_png
        wait_for(lambda: camera.screenshot_as_png != first, what="a new frame")
        frame, model_input = browser.execute_script("return ['camera', 'input'].map(id => "
                                                    "document.getElementById(id).dataset.capture)")
        assert frame == model_input and int(frame) > 1   # the input beside the frame is made of that capture

        # The class named as markup shows as text, and ran nothing.
        tiles = browser.find_elements(By.CSS_SELECTOR, "#tiles .tile")
        assert tiles[-1].find_element(By.CLASS_NAME, "tile-name").text == MARKUP_CLASS
        assert browser.title == "pi-backprop" and not browser.find_elements(By.CSS_SELECTOR, "#tiles img")

        # Holding a tile for about 2 s labels samples of that class; releasing stops it.
        assert stored_labels(state) == []
        pressed = time.time()
        ActionChains(browser).click_and_hold(tiles[2]).pause(2.0).release().perform()
        released = time.time()
        settled = _settled(lambda: len(stored_labels(state)))
        labels = stored_labels(state)
        assert len(labels) == settled >= 10 and set(labels) == {2}, labels
        # Every one was captured while the tile was held (give or take the stop's round trip).
        captured = _capture_times(state)
        assert pressed - 0.5 <= min(captured) and max(captured) <= released + 0.5, (pressed, released, captured)
        wait_for(lambda: "sample" in tiles[2].find_element(By.CLASS_NAME, "tile-count").text
                 and not tiles[2].find_element(By.CLASS_NAME, "tile-count").text.startswith("0 "),
                 what="the tile's count")

        # Teach a second class so that training starts, then delete one sample from the page.
        ActionChains(browser).click_and_hold(tiles[5]).pause(1.5).release().perform()
        select = browser.find_element(By.ID, "curate-class")
        select.find_element(By.CSS_SELECTOR, "option[value='5']").click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#thumbnails button"), what="the thumbnails")
        button = browser.find_elements(By.CSS_SELECTOR, "#thumbnails button")[0]
        victim = int(button.get_attribute("data-sample"))
        button.click()
        wait_for(lambda: victim not in _ids(state), what="the sample gone from the store")

        # Pause stops the step count, resume restarts it.
        wait_for(lambda: len(checkpoint_files(state)) >= 2, what="two checkpoints")
        browser.find_element(By.ID, "pause").click()
        wait_for(lambda: "paused" in browser.find_element(By.ID, "state").text, what="the paused state")
        step = service.trainer.step
        time.sleep(1.0)
        assert service.trainer.step == step
        browser.find_element(By.ID, "resume").click()
        wait_for(lambda: service.trainer.step > step, what="training again")

        # Going back to a checkpoint restores its step.
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#checkpoints button")) >= 2,
                 what="the checkpoint list")
        browser.find_element(By.ID, "pause").click()
        wait_for(lambda: service.paused, what="paused again")
        # Saved now, nothing is left for a timed checkpoint to add under the pointer.
        browser.find_element(By.ID, "save").click()
        newest = "const b = document.querySelector('#checkpoints button'); return b && b.dataset.step"
        wait_for(lambda: browser.execute_script(newest) == str(service.trainer.step),
                 what="the checkpoint saved from the page")
        back = browser.find_elements(By.CSS_SELECTOR, "#checkpoints button")[-1]   # the oldest listed
        target = int(back.get_attribute("data-step"))
        assert target < service.trainer.step
        back.click()
        _accept(browser)
        wait_for(lambda: service.trainer.step == target, what=f"the service back at step {target}")
        wait_for(lambda: browser.find_element(By.ID, "step").text == str(target), what="the page at that step")

        for width, height, name in ((360, 1900, "phone"), (1280, 1000, "desktop")):
            at_width(browser, width, height)
            # Nothing is wider than the screen: no sideways scrolling on a phone.
            assert browser.execute_script("return document.documentElement.scrollWidth") <= width
            screenshot(browser, tmp_path, name)
        assert console_errors(browser) == []


def _settled(count, quiet=1.0):
    """``count()`` once it has not changed for ``quiet`` seconds (the store catching up)."""
    deadline = time.monotonic() + DEADLINE
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the count kept changing for {DEADLINE} s (last {last})")


def _capture_times(state):
    with sqlite3.connect(f"file:{state / 'samples.db'}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT time FROM samples WHERE label IS NOT NULL")]


def _ids(state):
    with SampleStore(state / "samples.db", readonly=True) as store:
        return store.sample_ids()


def _accept(browser):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            browser.switch_to.alert.accept()
            return
        except NoAlertPresentException:
            time.sleep(0.05)
    raise AssertionError("no confirmation was asked")


def test_on_the_simulated_sensor_the_page_draws_the_window(tmp_path, browser):
    config = write_config(tmp_path / "c.toml", web={"port": 0, "fps": 5}, labels={"simulated": False})
    with running(config, tmp_path / "state") as service:
        open_page(browser, service)
        line = lambda: browser.execute_script(   # noqa: E731
            "const p = document.querySelector('#window polyline'); return p && p.getAttribute('points')")
        wait_for(lambda: line(), what="the window's line")
        first = line()
        wait_for(lambda: line() != first, what="a new window")
        assert browser.find_element(By.ID, "camera-figure").get_attribute("hidden") is not None
        wait_for(lambda: browser.find_element(By.ID, "prediction").text != "no prediction yet", what="a prediction")

        # Held on a phone-wide page, a tile labels windows of its class.
        at_width(browser, 360, 1900)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 360
        tile = browser.find_elements(By.CSS_SELECTOR, "#tiles .tile")[1]
        ActionChains(browser).click_and_hold(tile).pause(1.5).release().perform()
        settled = _settled(lambda: len(stored_labels(tmp_path / "state")))
        assert settled >= 5 and set(stored_labels(tmp_path / "state")) == {1}
        screenshot(browser, tmp_path, "sensor-phone")
        assert console_errors(browser) == []
