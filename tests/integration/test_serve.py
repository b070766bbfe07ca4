"""The REST service: API contract, bad inputs, a bounded loopback load test, and the page in headless Chromium."""
import io
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from ddad.detector import Detector
from ddad.serve import ServeLimits, create_app

httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402


def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _huge_header_png() -> bytes:
    """A valid small PNG whose IHDR claims 20000 x 20000 pixels."""
    data = bytearray(_png(np.zeros((16, 16), np.uint8)))
    ihdr = bytearray(data[12:29])  # type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", 20000, 20000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def _forged_png(width: int, height: int, rows: int) -> bytes:
    """A tiny, checksum-valid PNG whose header claims width x height but whose data holds only `rows` rows."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * width) * rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def detector(tiny_model):
    return Detector.load(tiny_model)


@pytest.fixture(scope="module")
def client(detector):
    with TestClient(create_app(detector, ServeLimits(max_bytes=2 * 2**20))) as c:
        yield c


def test_health_model_and_page(client):
    assert client.get("/health").json()["status"] == "ok"
    m = client.get("/model").json()
    assert m["image_size"] == 32 and m["threshold"] > 0
    assert m["runtime"] == {"backend": "torch", "precision": "fp32"}
    assert "Drop an image" in client.get("/").text


def test_predict_returns_decision_and_pictures(client, tiny_object):
    data = (next((tiny_object / "test" / "good").iterdir())).read_bytes()
    r = client.post("/predict?images=true", files={"file": ("good.png", data, "image/png")})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["decision"] in ("PASS", "FAIL") and j["normalised_score"] == pytest.approx(j["score"] / j["threshold"])
    assert set(j["timings_ms"]) == {"decode", "queue", "model", "total"}
    for key in ("heatmap_png", "reconstruction_png", "mask_png", "input_png"):
        assert Image.open(io.BytesIO(__import__("base64").b64decode(j[key]))).size == (32, 32)
    plain = client.post("/predict", files={"file": ("good.png", data, "image/png")}).json()
    assert "heatmap_png" not in plain and plain["score"] == pytest.approx(j["score"], abs=1e-6)


@pytest.mark.parametrize("name,payload,status", [
    ("truncated.png", _png(np.full((64, 64, 3), 90, np.uint8))[:120], 422),
    ("notes.txt", b"this is not an image", 415),
    ("dot.png", _png(np.zeros((1, 1, 3), np.uint8)), 422),
    ("huge.png", _huge_header_png(), 413),
    ("empty.png", b"", 400),
    ("big.bin", b"\0" * (2 * 2**20 + 10), 413),
])
def test_bad_inputs_get_clear_4xx_and_server_keeps_serving(client, name, payload, status):
    r = client.post("/predict", files={"file": (name, payload, "application/octet-stream")})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail and " at 0x" not in detail and "object at" not in detail  # no Python internals
    assert client.get("/health").status_code == 200


def test_forged_png_claiming_6000x6000_is_refused_fast(client):
    payload = _forged_png(6000, 6000, rows=10)
    assert len(payload) < 1000
    t0 = time.perf_counter()
    r = client.post("/predict", files={"file": ("forged.png", payload, "image/png")})
    assert r.status_code == 422, r.text
    assert "ends early" in r.json()["detail"]
    assert time.perf_counter() - t0 < 2.0


def test_pixel_limit_message_is_ddads_own(client):
    """A header over Pillow's own bomb limit (~179 M px) gets ddad's message and the option to raise ddad's limit."""
    r = client.post("/predict", files={"file": ("huge.png", _huge_header_png(), "image/png")})
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "400,000,000 pixels" in detail and "--max-pixels" in detail and "bomb" not in detail.lower()


def test_api_key_guards_predict_and_model_but_not_health(detector, tiny_object):
    data = next((tiny_object / "test" / "good").iterdir()).read_bytes()
    with TestClient(create_app(detector, api_key="s3cret-key")) as c:
        files = {"file": ("good.png", data, "image/png")}
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            assert c.post("/predict", files=files, headers=headers).status_code == 401
            assert c.get("/model", headers=headers).status_code == 401
        assert c.post("/predict", files=files, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.post("/predict", files=files, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/model", headers={"X-API-Key": "s3cret-key"}).json()["limits"]["max_bytes"] == 20 * 2**20


def test_serve_help_states_the_defaults():
    from ddad.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    text = sub.format_help()
    assert "default: 20.0" in text and "default: 50000000" in text and "--api-key" in text


@pytest.mark.parametrize("arr,mode", [
    (np.full((40, 50), 120, np.uint8), "L"),
    (np.full((40, 50, 4), 120, np.uint8), "RGBA"),
    (np.full((40, 50), 30000, np.uint16), None),
])
def test_grey_rgba_and_16bit_uploads_are_scored(client, arr, mode):
    r = client.post("/predict", files={"file": ("x.png", _png(arr, mode), "image/png")})
    assert r.status_code == 200, r.text and np.isfinite(r.json()["score"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(detector):
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(detector), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(timeout=10)


def test_load_200_requests_from_8_clients(server, tiny_object):
    files = sorted((tiny_object / "test").rglob("*.png"))
    payloads = [f.read_bytes() for f in files]

    def one(i):
        with httpx.Client(timeout=60) as c:
            t0 = time.perf_counter()
            r = c.post(f"{server}/predict", files={"file": (f"{i}.png", payloads[i % len(payloads)], "image/png")})
            return r.status_code, time.perf_counter() - t0, r.json().get("batch_size", 0)

    def health_while_loaded():
        time.sleep(0.5)
        with httpx.Client(timeout=10) as c:
            t = time.perf_counter()
            ok = c.get(f"{server}/health").status_code == 200
            return ok, time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(9) as pool:
        health = pool.submit(health_while_loaded)
        results = list(pool.map(one, range(200)))
    wall = time.perf_counter() - t0
    ok, health_s = health.result()
    assert ok and health_s < 1.0, health_s  # the model runs off the event loop
    codes = [c for c, _, _ in results]
    lat = np.array([t for _, t, _ in results]) * 1000
    print(f"\nload: 200 requests, 8 clients, {wall:.1f} s, p50 {np.percentile(lat, 50):.0f} ms, "
          f"p95 {np.percentile(lat, 95):.0f} ms, max batch {max(b for _, _, b in results)}")
    assert all(c == 200 for c in codes), sorted(set(codes))
    assert max(b for _, _, b in results) > 1  # concurrent requests were batched
    with httpx.Client() as c:
        assert c.get(f"{server}/health").status_code == 200


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="headless Chromium + chromedriver not installed "
                    "(Debian: apt-get install chromium chromium-driver; .ci/run installs them)")
def test_page_in_headless_chromium(server, tiny_object, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: pip install -e '.[browser]'")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(server + "/")
        WebDriverWait(driver, 30).until(lambda d: "model:" in d.find_element(By.ID, "model").text)
        image = next((tiny_object / "test" / "spot").iterdir())
        driver.find_element(By.ID, "file").send_keys(str(image))
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "decision"))
        assert driver.find_element(By.ID, "decision").text in ("PASS", "FAIL")
        imgs = driver.find_elements(By.CSS_SELECTOR, "#result img")
        assert len(imgs) == 4 and all(driver.execute_script("return arguments[0].naturalWidth", i) == 32 for i in imgs)
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "error"))
        assert "415" in driver.find_element(By.ID, "error").text
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
