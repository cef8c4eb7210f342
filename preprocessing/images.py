"""Reading any image file as RGB uint8, with a clear status when that is impossible.

Handled: grayscale (L, 1), palette (P, with or without transparency), RGBA / LA (composited on white),
16-bit and 32-bit integer or float grayscale (I;16*, I, F: 16-bit scaled by 1/257, float taken as 0..1
when its maximum is <= 1, else clipped to 0..255), CMYK and YCbCr JPEGs, and EXIF orientation
(``ImageOps.exif_transpose``). Images over ``max_pixels`` (default 50 megapixels) are not decoded at all
and get status ``too_large``; detection itself runs on a downscaled copy of large images (see
:mod:`preprocessing.process`), so this limit only guards memory.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 50_000_000


class ImageLoadError(Exception):
    """An image that cannot be used: ``status`` is the manifest status, the message its reason."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Converts a decoded PIL image of any mode to an (H, W, 3) uint8 RGB array."""
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.size and values.max() > 255):
            values = values / 257.0
        elif mode == "F" and values.size and values.max() <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def load_rgb(path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Loads ``path`` as RGB uint8, upright; raises :class:`ImageLoadError` (unreadable / too_large)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageLoadError("too_large", f"{width}x{height} = {width * height / 1e6:.1f} MP "
                                                      f"exceeds the limit of {max_pixels / 1e6:.0f} MP")
                image.load()
                image = ImageOps.exif_transpose(image)
                rgb = to_rgb_array(image)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageLoadError("too_large", str(error)) from error
    except FileNotFoundError as error:
        raise ImageLoadError("unreadable", f"file not found: {path}") from error
    except Exception as error:  # PIL raises many types for corrupt or truncated files
        size = _file_size(path)
        detail = "empty file (0 bytes)" if size == 0 else f"{type(error).__name__}: {error}"
        raise ImageLoadError("unreadable", detail) from error
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ImageLoadError("unreadable", f"decoded to an unusable array of shape {rgb.shape}")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _file_size(path) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
