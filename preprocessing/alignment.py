"""Face geometry: the 5-point template, the Umeyama similarity fit, and warping / cropping to a square face."""
from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_SIZE = 112
TEMPLATE_112 = np.array([
    [38.2946, 51.6963],  # left eye (in the image's left half)
    [73.5318, 51.5014],  # right eye
    [56.0252, 71.7366],  # nose tip
    [41.5493, 92.3655],  # mouth left corner
    [70.7299, 92.2041],  # mouth right corner
], np.float64)


def template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The standard 5-point template scaled from 112x112 to ``size`` x ``size`` pixels."""
    return TEMPLATE_112 * (float(size) / TEMPLATE_SIZE)


def umeyama(src, dst) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991), without reflection. ``src`` and ``dst`` are (N, 2) point sets; returns the 2x3 matrix
    ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two matching sets of >= 2 points, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c ** 2).sum() / len(src)
    if src_var <= 0:
        raise ValueError("degenerate source points (all equal)")
    scale = (s * d).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def transform_points(matrix, points) -> np.ndarray:
    """Applies a 2x3 affine matrix to (N, 2) points."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    matrix = np.asarray(matrix, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(rgb: np.ndarray, landmarks, size: int = TEMPLATE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Warps the face whose 5 landmarks are given onto the template; returns (face size x size x 3, matrix)."""
    matrix = umeyama(np.asarray(landmarks, np.float64).reshape(5, 2), template(size))
    face = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
    return face, matrix


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resizes to size x size (area averaging when shrinking, bilinear when enlarging)."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interpolation = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def crop_box(rgb: np.ndarray, box, size: int) -> np.ndarray:
    """Crops the box (x, y, w, h; clipped to the image) and resizes it to size x size."""
    h, w = rgb.shape[:2]
    x, y, bw, bh = (float(v) for v in box)
    x0, y0 = int(np.clip(np.floor(x), 0, w - 1)), int(np.clip(np.floor(y), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(x + bw), x0 + 1, w)), int(np.clip(np.ceil(y + bh), y0 + 1, h))
    return resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), size)
