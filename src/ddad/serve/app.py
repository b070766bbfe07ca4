"""FastAPI app: POST /predict, GET /health, GET /model, GET / (a page to drop an image on).

Uploads are bounded in bytes and pixels (checked from the header before decoding); bad inputs get a 4xx with a
message, and the server keeps serving. Model work runs in one background thread via the Batcher, so /health
answers while requests are being scored.
"""
from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse
from PIL import Image

from .. import __version__
from ..data.sample import ImageCorruptError, ImageReadError, ImageSizeError, decode_image
from ..report.figures import overlay, to_uint8
from .batcher import Batcher

__all__ = ["ServeLimits", "create_app"]


@dataclass(frozen=True)
class ServeLimits:
    max_bytes: int = 20 * 2**20  # upload size
    max_pixels: int = 50_000_000  # width * height, read from the header
    min_side: int = 16
    max_batch: int = 8
    max_queue: int = 256


def _b64png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _key_check(api_key: str | None):
    """A FastAPI dependency: with an API key set, a request must send it as `X-API-Key: KEY` or
    `Authorization: Bearer KEY` (compared in constant time); without one, every request passes."""

    async def check(request: Request) -> None:
        if not api_key:
            return
        auth = request.headers.get("authorization", "")
        sent = request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
        if not sent or not secrets.compare_digest(sent.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key header "
                                     "(or Authorization: Bearer KEY)", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(detector, limits: ServeLimits = ServeLimits(), api_key: str | None = None) -> FastAPI:
    """The service. api_key: required on /predict and /model when given (/health and the page stay open)."""
    authorised = Depends(_key_check(api_key))
    cal = detector.calibration
    threshold = cal.threshold if cal is not None and cal.threshold == cal.threshold else None
    batcher = Batcher(detector, limits.max_batch, max_queue=limits.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="ddad", version=__version__, lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "queued": batcher.queue.qsize()}

    @app.get("/model", dependencies=[authorised])
    async def model() -> dict:
        c = detector.cfg
        return {"ddad_version": __version__, "method": c.method, "preset": c.model.preset, "image_size": c.data.image_size,
                "image_height": c.data.shape[0],
                "backbone": c.features.backbone, "adapted": detector.adapted, "sampling": c.sampling.__dict__,
                "runtime": dict(detector.runtime),  # backend and precision of the networks (ddad.runtime)
                "threshold": threshold, "pixel_threshold": cal.pixel_threshold if cal else None,
                "false_reject_rate": c.scoring.false_reject_rate,
                "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels, "min_side": limits.min_side}}

    @app.post("/predict", dependencies=[authorised])
    async def predict(file: UploadFile = File(...), images: bool = Query(False, description="add base64 PNGs")) -> dict:
        t0 = time.perf_counter()
        data = await file.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise HTTPException(413, f"upload larger than {limits.max_bytes:,} bytes (ddad serve --max-mb)")
        if not data:
            raise HTTPException(400, "empty upload: send an image file in the 'file' field")
        try:
            x = await asyncio.to_thread(decode_image, data, detector.cfg.data.shape, limits.max_pixels,
                                        limits.min_side)
        except ImageReadError as e:
            status = 415  # not an image at all
            if isinstance(e, ImageSizeError):
                status = 413 if e.too_large else 422
            elif isinstance(e, ImageCorruptError):
                status = 422
            raise HTTPException(status, f"{file.filename or 'upload'}: {e}") from None
        decode_ms = (time.perf_counter() - t0) * 1000
        try:
            r = await batcher.submit(x)
        except asyncio.QueueFull:
            raise HTTPException(503, "the model queue is full; retry shortly") from None
        out = {"filename": file.filename, "score": r.score, "threshold": threshold,
               "normalised_score": r.score / threshold if threshold else None,
               "decision": None if threshold is None else ("FAIL" if r.score > threshold else "PASS"),
               "timings_ms": {"decode": decode_ms, "queue": r.queue_ms, "model": r.model_ms,
                              "total": (time.perf_counter() - t0) * 1000}, "batch_size": r.batch_size,
               "info": r.info}
        if images:
            vmax = threshold * 1.5 if threshold else float(r.amap.max())
            out["heatmap_png"] = _b64png(overlay(x, r.amap, vmax))
            out["reconstruction_png"] = _b64png(to_uint8(r.reconstruction))
            if cal is not None:
                out["mask_png"] = _b64png(to_uint8((r.amap > cal.pixel_threshold).float()))
            out["input_png"] = _b64png(to_uint8(x))
        return out

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (resources.files("ddad.serve") / "page.html").read_text()

    return app
