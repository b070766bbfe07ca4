"""The one sample type every dataset returns, and robust image / mask reading.

Images are float32 tensors (3, H, W) in [0, 1]; masks are float32 (1, H, W) with values {0, 1}.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..imagefiles import IMAGE_EXTENSIONS

__all__ = [
    "Sample", "ImageReadError", "ImageCorruptError", "ImageSizeError", "read_image", "read_mask", "decode_image", "IMAGE_EXTENSIONS", "list_images",
]

log = logging.getLogger(__name__)



class ImageReadError(ValueError):
    """An image file could not be decoded (missing, truncated, not an image)."""


class ImageCorruptError(ImageReadError):
    """An image's header is readable but its data is truncated or corrupt."""


class ImageSizeError(ImageReadError):
    """An image is decodable but too large or too small to score (too_large tells which)."""

    def __init__(self, message: str, too_large: bool):
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    image: (3, H, W) float32 in [0, 1].  mask: (1, H, W) float32 {0, 1}, or None where the layout has none
    (good images get an all-zero mask when a size is known).  label: 0 good, 1 anomalous.
    """

    image: torch.Tensor
    mask: torch.Tensor | None
    label: int
    path: str
    defect_type: str


def list_images(folder: Path) -> list[Path]:
    """Sorted image files (by extension, case-insensitive) directly inside `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError as e:
        raise ImageReadError(f"image file not found: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageReadError(
            f"cannot read image {path}: {e}. Expected a complete PNG/JPEG/BMP/TIFF file; "
            "re-export or remove it."
        ) from e
    return img


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] for any PIL mode: grey, 16-bit, RGBA (alpha dropped), palette."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top, 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """(height, width) of a size given as a square side or (height, width); None stays None."""
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def read_image(path: str | Path, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image as (3, H, W) float32 in [0, 1]: size a square side or (height, width), bicubic resize with
    antialiasing; None keeps the stored size."""
    return _to_tensor(_open(Path(path)), size)


def decode_image(data: bytes, size: int | tuple[int, int] | None = None, max_pixels: int = 50_000_000, min_side: int = 16) -> torch.Tensor:
    """Decode uploaded bytes like read_image. The pixel count is checked from the header, before decoding,
    so a small file that claims 20000x20000 pixels is refused without allocating it.

    Raises ImageReadError (not an image), ImageCorruptError (truncated data), ImageSizeError (too large/small).
    """
    import io

    limit = f"at most {max_pixels:,} pixels are accepted (ddad serve --max-pixels)"
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # Pillow's own limit (~179 M pixels) fires inside open()
        n = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageSizeError(f"image has {int(n.group(1)):,} pixels; {limit}" if n else f"image is too large; {limit}",
                             too_large=True) from e
    except UnidentifiedImageError as e:
        raise ImageReadError("not an image file (no PNG, JPEG, BMP, TIFF or WebP header found); send one of those") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"not a readable image file ({_plain(e)}); send a PNG, JPEG, BMP, TIFF or WebP") from e
    w, h = img.size
    if w * h > max_pixels:
        raise ImageSizeError(f"image is {w}x{h} = {w * h:,} pixels; {limit}", too_large=True)
    if min(w, h) < min_side:
        raise ImageSizeError(f"image is {w}x{h}; at least {min_side}x{min_side} pixels are needed", too_large=False)
    if img.format == "PNG":
        _check_png_complete(data)  # Pillow fills a PNG whose data stops early with zeros, silently
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageCorruptError(f"image data is truncated or corrupt ({_plain(e)})") from e
    return _to_tensor(img, size)


def _plain(e: Exception) -> str:
    """An exception's message without Python object reprs (`<_io.BytesIO object at 0x...>`)."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the upload", str(e)) or type(e).__name__


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_expected_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (filter byte + packed samples per row) that a PNG's IDAT data must inflate to."""
    bits = bit_depth * _PNG_CHANNELS[colour_type]
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        pw, ph = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pw > 0 and ph > 0:
            total += ph * (1 + -(-(pw * bits) // 8))
    return total


def _check_png_complete(data: bytes) -> None:
    """Raise ImageCorruptError unless the PNG's IDAT stream inflates to every scanline its header declares.
    Streams the inflation in bounded pieces (nothing the size of the image is held), so a tiny file that claims a
    huge image is refused in milliseconds instead of being decoded as mostly zeros."""
    import struct
    import zlib

    pos, header, inflater, got = 8, None, zlib.decompressobj(), 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            raise ImageCorruptError(f"PNG chunk {kind.decode('latin-1')} is cut off after {len(body)} of {length} bytes")
        pos += 12 + length
        if kind == b"IHDR" and length >= 13:
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            if colour not in _PNG_CHANNELS:
                raise ImageCorruptError(f"PNG colour type {colour} is not defined by the PNG standard")
            header = png_expected_bytes(w, h, depth, colour, bool(interlace))
        elif kind == b"IDAT" and header is not None:
            try:
                chunk = inflater.decompress(body, max(0, header + 1 - got))
                got += len(chunk)
                while inflater.unconsumed_tail and got <= header:
                    got += len(inflater.decompress(inflater.unconsumed_tail, max(1, header + 1 - got)))
            except zlib.error as e:
                raise ImageCorruptError(f"PNG image data is corrupt ({e})") from e
        elif kind == b"IEND":
            break
    if header is not None and got < header:
        raise ImageCorruptError(f"PNG image data ends early: {got:,} of the {header:,} bytes its header declares "
                                "(a truncated or forged file)")


def _to_tensor(img: Image.Image, size: int | tuple[int, int] | None) -> torch.Tensor:
    target = hw(size)
    if target is not None and img.mode in ("RGB", "RGBA", "L", "LA", "P"):
        f = min(img.size[0] // (2 * target[1]), img.size[1] // (2 * target[0]))
        if f >= 2:
            # a box reduction in Pillow first (exact averaging, fast on uint8), leaving >= 2x the target size for
            # the antialiased bicubic below, so a 6000x6000 upload never becomes a 430 MB float image
            img = img.convert("RGB").reduce(f)
    arr = _to_rgb_array(img)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if target is not None and tuple(t.shape[1:]) != target:
        t = torch.nn.functional.interpolate(
            t[None], size=target, mode="bicubic", antialias=True, align_corners=False
        )[0].clamp(0, 1)
    return t.contiguous()


def read_mask(path: str | Path, size: int | tuple[int, int] | None = None, threshold: float = 0.5) -> torch.Tensor:
    """Read a ground-truth mask as (1, H, W) float32 {0,1} (size as read_image's).

    Nearest-neighbour resize (never bilinear: that dilates or erodes thin defects), then binarised:
    a pixel is anomalous where its grey value / 255 > threshold (MVTec 0/255 masks: 0.5; MTD soft edges:
    128/255; VisA label-index masks: 0.0, i.e. any non-zero label).
    """
    img = _open(Path(path))
    if img.mode not in ("L", "1", "P", "I", "I;16", "F"):
        img = img.convert("L")
    target = hw(size)
    if target is not None and img.size != (target[1], target[0]):
        img = img.resize((target[1], target[0]), Image.NEAREST)
    arr = np.asarray(img, dtype=np.float32)
    if img.mode == "1":
        arr = arr * 255.0
    m = (arr / 255.0 > threshold).astype(np.float32)
    return torch.from_numpy(m)[None]
