"""Procedural faces for the built-in demo database: identity, head pose, imaging conditions and 16 action units.

A face is drawn with OpenCV in a canonical, upright frame (face centre at the origin, units = pixels of a
160-pixel canvas, y down), then placed on a cluttered background through a random similarity transform (the head
pose), lit by a gradient, blurred and given sensor noise. The five landmarks (eye centres, nose tip, mouth corners)
are computed in the canonical frame and mapped through the same transform.

Each action unit takes an intensity in [0, 1] and moves the geometry it names (FACS): brows (AU1, AU2, AU4), lids
(AU5, AU7), cheeks (AU6), nose (AU9) and lips / jaw (AU10, AU12, AU15, AU17, AU20, AU23, AU24, AU25, AU26).
Effects are graded by intensity and add up when several units are active.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping

import cv2
import numpy as np

ACTION_UNITS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 17, 20, 23, 24, 25, 26)
"""The action units the renderer draws, in numeric order."""

_SHIFT = 4
_LAYER = 256   # side of the canonical drawing layer (160-pixel scale, with room for the body and for the pose)
_ORIGIN = _LAYER / 2
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA


@dataclasses.dataclass(frozen=True)
class Identity:
    """What stays fixed for one subject: face shape, skin, features, hair, accessories, resting expression."""

    subject: str
    face_w: float          # half width of the head
    face_h: float          # half height of the head
    jaw: float             # chin taper
    skin: tuple            # BGR
    eye_dx: float          # half the distance between the eye centres
    eye_y: float
    eye_w: float           # half width of an eye
    eye_h: float           # upper lid opening
    eye_tilt: float        # outer corners up (+) or down (-)
    iris: tuple            # BGR
    brow_gap: float        # brow height above the eye centre
    brow_thick: float
    brow_arch: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float         # half width of the mouth
    lip_upper: float
    lip_lower: float
    lip_color: tuple       # BGR
    hair_style: int        # 0 short, 1 long, 2 bald, 3 voluminous
    hair_color: tuple
    hairline: float        # forehead height, fraction of face_h
    beard: float           # 0 none .. 1 full
    glasses: bool
    clothes: tuple
    rest_brow: float       # resting brow offset (+ lower)
    rest_mouth: float      # resting mouth-corner offset (+ down)


@dataclasses.dataclass(frozen=True)
class Pose:
    """Similarity transform of the head about the canvas centre: degrees, scale, shift in canvas fractions."""

    angle: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0


@dataclasses.dataclass(frozen=True)
class Conditions:
    """Imaging: background clutter, lighting gradient, colour cast, blur and sensor noise."""

    clutter: int = 0               # number of background shapes (0: plain grey background)
    light_angle: float = 0.0       # direction of the lighting gradient, radians
    light_strength: float = 0.0    # relative brightness change across the canvas
    brightness: float = 1.0
    tint: tuple = (1.0, 1.0, 1.0)  # per-channel gain (BGR)
    blur: float = 0.0              # Gaussian sigma, canvas pixels
    noise: float = 0.0             # sensor noise sigma, grey levels


@dataclasses.dataclass(frozen=True)
class FaceParams:
    """Everything :func:`render_face` draws: who, which AUs at which intensity (name -> [0, 1]), pose, conditions."""

    identity: Identity
    aus: Mapping[str, float] = dataclasses.field(default_factory=dict)
    pose: Pose = Pose()
    conditions: Conditions = Conditions()

    def au(self, number: int) -> float:
        return min(max(float(self.aus.get(f"AU{number}", 0.0)), 0.0), 1.0)


def random_identity(rng: np.random.Generator, subject: str) -> Identity:
    """Samples a subject's appearance."""
    u = rng.uniform
    tone = u(0.0, 1.0)
    skin = _mix((205, 220, 245), (55, 85, 125), tone)
    skin = tuple(float(np.clip(c * u(0.93, 1.07), 0, 255)) for c in skin)
    hair = [(20, 20, 25), (25, 45, 80), (40, 80, 140), (70, 140, 200), (150, 150, 155), (15, 30, 50)]
    iris = [(30, 50, 80), (20, 30, 45), (140, 110, 60), (80, 120, 90)]
    clothes = tuple(float(v) for v in rng.integers(20, 235, 3))
    lip = _mix(skin, (90, 70, 170), u(0.35, 0.65))
    eye_dx, eye_y = u(12.5, 15.5), u(-10, -6)
    return Identity(
        subject=subject, face_w=u(29, 35), face_h=u(41, 47), jaw=u(0.05, 0.3), skin=skin,
        eye_dx=eye_dx, eye_y=eye_y, eye_w=u(5.0, 6.5), eye_h=u(2.8, 3.6), eye_tilt=u(-0.8, 1.2),
        iris=tuple(float(v) for v in iris[rng.integers(len(iris))]), brow_gap=u(7.5, 10.5),
        brow_thick=u(1.6, 3.4), brow_arch=u(0.5, 2.5),
        # Nose and mouth keep roughly the proportions of the 5-point alignment template.
        nose_y=eye_y + 2 * eye_dx * u(0.5, 0.64), nose_w=u(3.5, 5.5), mouth_y=eye_y + 2 * eye_dx * u(1.05, 1.25),
        mouth_w=2 * eye_dx * u(0.36, 0.46), lip_upper=u(1.6, 3.0), lip_lower=u(2.2, 4.0), lip_color=lip,
        hair_style=int(rng.choice(4, p=(0.45, 0.3, 0.1, 0.15))),
        hair_color=tuple(float(v) for v in hair[rng.integers(len(hair))]), hairline=u(0.6, 0.8),
        beard=float(u(0.4, 1.0) if rng.random() < 0.12 else 0.0), glasses=bool(rng.random() < 0.15),
        clothes=clothes, rest_brow=u(-1.2, 1.2), rest_mouth=u(-1.0, 1.2))


def random_pose(rng: np.random.Generator) -> Pose:
    """Rotation within +-15 degrees, scale 0.85-1.15, shift within +-8 % of the canvas."""
    return Pose(angle=rng.uniform(-15, 15), scale=rng.uniform(0.85, 1.15), dx=rng.uniform(-0.08, 0.08),
                dy=rng.uniform(-0.08, 0.08))


def random_conditions(rng: np.random.Generator) -> Conditions:
    """Cluttered background, uneven lighting, a colour cast, mild blur and sensor noise."""
    return Conditions(clutter=int(rng.integers(6, 20)), light_angle=rng.uniform(0, 2 * math.pi),
                      light_strength=rng.uniform(0.0, 0.4), brightness=rng.uniform(0.75, 1.15),
                      tint=tuple(rng.uniform(0.92, 1.08, 3)), blur=rng.uniform(0.0, 1.0),
                      noise=rng.uniform(2.0, 8.0))


def pose_matrix(pose: Pose, canvas: int) -> np.ndarray:
    """The 2x3 map from canonical face coordinates to canvas pixels."""
    unit = canvas / 160.0
    s = pose.scale * unit
    a = math.radians(pose.angle)
    c, d = s * math.cos(a), s * math.sin(a)
    centre = canvas / 2.0
    return np.array([[c, -d, centre + pose.dx * canvas], [d, c, centre + pose.dy * canvas]], np.float64)


def render_face(params: FaceParams, rng: np.random.Generator, canvas: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Draws one face: returns a (canvas, canvas, 3) uint8 BGR image and (5, 2) float32 landmarks.

    Landmarks are left eye, right eye, nose tip, mouth left, mouth right in canvas pixels ("left" = image left).
    ``rng`` only draws the background clutter and the sensor noise, so the same params and seed give the same image.
    """
    # The canonical layer is drawn at a fixed 160-pixel scale and mapped to the canvas in one warp.
    layer = np.zeros((_LAYER, _LAYER, 3), np.uint8)
    mask = np.zeros((_LAYER, _LAYER), np.uint8)
    shade = np.full((_LAYER, _LAYER), 128, np.uint8)
    pen = _Pen(layer, mask, shade)
    landmarks = _draw_face(pen, params)
    shade_f = cv2.GaussianBlur(shade, (0, 0), 1.0).astype(np.float32) / 128.0
    layer = np.clip(layer.astype(np.float32) * shade_f[..., None], 0, 255).astype(np.uint8)
    if params.identity.glasses:
        _glasses(pen, params, layer)

    m = pose_matrix(params.pose, canvas) @ np.array([[1, 0, -_ORIGIN], [0, 1, -_ORIGIN], [0, 0, 1]], np.float64)
    size = (canvas, canvas)
    face = cv2.warpAffine(layer, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255.0
    background = _background(params.conditions, rng, canvas)
    image = background * (1.0 - alpha) + face.astype(np.float32) * alpha
    image = _imaging(image, params.conditions, rng)
    points = np.asarray(landmarks, np.float64) + _ORIGIN
    points = points @ m[:, :2].T + m[:, 2]
    return image, points.astype(np.float32)


# ---------------------------------------------------------------------------------------------------- drawing


class _Pen:
    """Draws in canonical coordinates (origin = face centre) on the face layer, its mask and its shading map."""

    def __init__(self, layer, mask, shade):
        self.layer, self.mask, self.shade = layer, mask, shade

    @staticmethod
    def pts(points) -> np.ndarray:
        return np.round((np.asarray(points, np.float64) + _ORIGIN) * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def fill(self, points, color, solid: bool = False, target=None):
        target = self.layer if target is None else target
        cv2.fillPoly(target, [self.pts(points)], color, _AA, _SHIFT)
        if solid:
            cv2.fillPoly(self.mask, [self.pts(points)], 255, _AA, _SHIFT)

    def line(self, points, color, thickness: float = 1.0, target=None):
        target = self.layer if target is None else target
        cv2.polylines(target, [self.pts(points)], False, color, max(1, int(round(thickness))), _AA, _SHIFT)

    def shade_fill(self, points, amount: float):
        """Darkens (amount < 0) or lightens a region by ``amount`` (fraction of the local brightness)."""
        cv2.fillPoly(self.shade, [self.pts(points)], _shade_value(amount), _AA, _SHIFT)

    def shade_line(self, points, amount: float, thickness: float = 1.0):
        cv2.polylines(self.shade, [self.pts(points)], False, _shade_value(amount), max(1, int(round(thickness))),
                      _AA, _SHIFT)


def _shade_value(amount: float) -> int:
    return min(max(int(round(128 * (1.0 + amount))), 0), 255)


def _mix(a, b, t: float) -> tuple:
    return tuple(float((1 - t) * x + t * y) for x, y in zip(a, b))


def _scaled(color, factor: float) -> tuple:
    return tuple(min(max(c * factor, 0.0), 255.0) for c in color)


def _curve(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic curve from p0 to p2 whose midpoint (t = 0.5) is p1."""
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    control = 2 * p1 - (p0 + p2) / 2
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * control + t ** 2 * p2


def _ellipse_points(cx, cy, ax, ay, start=0.0, stop=2 * math.pi, n=48) -> np.ndarray:
    t = np.linspace(start, stop, n)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


def _draw_face(pen: _Pen, p: FaceParams) -> list:
    ident = p.identity
    a = {n: p.au(n) for n in ACTION_UNITS}
    fw, fh = ident.face_w, ident.face_h
    chin_drop = 1.5 * a[25] + 7.0 * a[26]

    _body(pen, ident)
    _hair_back(pen, ident)
    # Head outline: an ellipse whose lower half tapers to the chin and drops with the jaw (AU26).
    t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
    lower = np.clip(np.sin(t), 0, None)
    head = np.stack([fw * np.cos(t) * (1 - ident.jaw * lower ** 3), fh * np.sin(t) + chin_drop * lower ** 2], 1)
    for side in (-1, 1):
        pen.fill(_ellipse_points(side * (fw - 1), ident.eye_y + 3, 4.5, 8), _scaled(ident.skin, 0.88), solid=True)
    pen.fill(head, ident.skin, solid=True)
    # Soft shadow along the face border gives the head some volume.
    pen.shade_line(head[np.r_[0:72, 0]], -0.18, 3)

    _beard(pen, ident, chin_drop)
    _forehead_and_brows(pen, ident, a)
    _eyes(pen, ident, a)
    _cheeks(pen, ident, a)
    nose = _nose(pen, ident, a)
    corners = _mouth(pen, ident, a)
    _hair_front(pen, ident)
    left_eye, right_eye = (-ident.eye_dx, ident.eye_y), (ident.eye_dx, ident.eye_y)
    return [left_eye, right_eye, nose, corners[0], corners[1]]


def _body(pen: _Pen, ident: Identity):
    fw, fh = ident.face_w, ident.face_h
    pen.fill([(-fw * 2.4, _ORIGIN), (-fw * 2.0, fh + 28), (0, fh + 18), (fw * 2.0, fh + 28), (fw * 2.4, _ORIGIN)],
             ident.clothes, solid=True)
    pen.fill([(-fw * 0.45, fh * 0.4), (fw * 0.45, fh * 0.4), (fw * 0.5, fh + 24), (-fw * 0.5, fh + 24)],
             _scaled(ident.skin, 0.8), solid=True)


def _hair_back(pen: _Pen, ident: Identity):
    fw, fh = ident.face_w, ident.face_h
    if ident.hair_style == 1:
        pen.fill(np.vstack([_ellipse_points(0, -fh * 0.1, fw + 6, fh + 3, math.pi, 2 * math.pi, 24),
                            [(fw + 7, fh * 0.9), (-fw - 7, fh * 0.9)]]), ident.hair_color, solid=True)
    elif ident.hair_style == 3:
        pen.fill(_ellipse_points(0, -fh * 0.25, fw + 9, fh * 0.95), ident.hair_color, solid=True)


def _hair_front(pen: _Pen, ident: Identity):
    if ident.hair_style == 2:
        return
    fw, fh = ident.face_w + 1.5, ident.face_h + 2.0
    side = 0.35
    top = _ellipse_points(0, 0, fw, fh, math.pi + side, 2 * math.pi - side, 28)
    # The hairline stays clear of fully raised brows, so AU1 / AU2 are never hidden.
    brow_top = ident.eye_y - ident.brow_gap + ident.rest_brow - ident.brow_arch - 5.5
    line_y = min(-ident.face_h * ident.hairline, brow_top - 3.0)
    hairline = _curve(top[-1], (0, line_y), top[0], 12)
    pen.fill(np.vstack([top, hairline]), ident.hair_color, solid=True)


def _beard(pen: _Pen, ident: Identity, chin_drop: float):
    if not ident.beard:
        return
    fw, fh = ident.face_w, ident.face_h
    jaw = _ellipse_points(0, 0, fw * 0.97, fh + chin_drop, 0.25, math.pi - 0.25, 24)
    top = _curve(jaw[-1], (0, ident.nose_y + 3.0), jaw[0], 12)
    overlay = pen.layer.copy()
    pen.fill(np.vstack([jaw, top]), ident.hair_color, target=overlay)
    cv2.addWeighted(overlay, 0.45 * ident.beard, pen.layer, 1 - 0.45 * ident.beard, 0, dst=pen.layer)


def _forehead_and_brows(pen: _Pen, ident: Identity, a: dict):
    by = ident.eye_y - ident.brow_gap + ident.rest_brow
    # Forehead wrinkles: central for the inner brow raiser, lateral for the outer one.
    for k in range(3):
        y = by - 5.0 - 3.2 * k
        if a[1] > 0.05:
            pen.shade_line(_curve((-9, y + 0.8), (0, y - 0.6), (9, y + 0.8), 8), -0.3 * a[1], 1)
        if a[2] > 0.05:
            for side in (-1, 1):
                pen.shade_line(_curve((side * 8, y), (side * 14, y - 1.0), (side * 20, y + 0.5), 8), -0.3 * a[2], 1)
    # Glabella: vertical lines between knitted brows (AU4), horizontal bunching at the nose root (AU9).
    if a[4] > 0.05:
        for side in (-1, 1):
            x = side * (2.5 - 0.6 * a[4])
            pen.shade_line([(x, by - 1.5), (x + side * 0.3, by + 5.5)], -0.45 * a[4], 1)
    inner_dy = -4.5 * a[1] + 4.0 * a[4] * (1 - 0.6 * a[1]) + 1.2 * a[9]  # AU1+4: oblique brows
    outer_dy = -4.5 * a[2] + 1.8 * a[4] + 1.0 * a[1] * (1 - a[2])
    mid_dy = -2.5 * a[1] - 3.0 * a[2] + 2.8 * a[4] + 0.6 * a[9]
    inner_dx = 2.5 * a[4] + 0.5 * a[9]
    for side in (-1, 1):
        inner = (side * (ident.eye_dx - 6.5 - inner_dx), by + inner_dy)
        mid = (side * (ident.eye_dx + 0.5), by - ident.brow_arch + mid_dy)
        outer = (side * (ident.eye_dx + 9.0), by + 1.5 + outer_dy)
        spine = _curve(inner, mid, outer, 10)
        width = ident.brow_thick * np.linspace(1.0, 0.45, 10)
        upper = spine - np.stack([np.zeros(10), width / 2], 1)
        lower = spine + np.stack([np.zeros(10), width / 2], 1)
        pen.fill(np.vstack([upper, lower[::-1]]), _scaled(ident.hair_color, 0.9))


def _eyes(pen: _Pen, ident: Identity, a: dict):
    up = ident.eye_h * (1 + 0.9 * a[5] - 0.3 * a[7] - 0.2 * a[6] - 0.12 * a[4] - 0.15 * a[9])
    down = ident.eye_h * 0.8 * (1 - 0.6 * a[7] - 0.5 * a[6] - 0.15 * a[9])
    up, down = max(up, 0.6), max(down, 0.25)
    iris_r = 2.9
    white = _mix(ident.skin, (235, 240, 245), 0.8)
    for side in (-1, 1):
        cx, cy = side * ident.eye_dx, ident.eye_y
        inner = (cx - side * ident.eye_w, cy)
        outer = (cx + side * ident.eye_w, cy - ident.eye_tilt)
        top = _curve(inner, (cx, cy - up), outer, 14)
        bottom = _curve(inner, (cx, cy + down), outer, 14)
        pen.fill(np.vstack([top, bottom[::-1]]), white)
        cv2.circle(pen.layer, tuple(pen.pts([(cx, cy)])[0, 0]), int(iris_r * _ONE), ident.iris, -1, _AA, _SHIFT)
        cv2.circle(pen.layer, tuple(pen.pts([(cx, cy)])[0, 0]), int(1.2 * _ONE), (10, 10, 10), -1, _AA, _SHIFT)
        cv2.circle(pen.layer, tuple(pen.pts([(cx + 0.8, cy - 0.8)])[0, 0]), int(0.5 * _ONE), (250, 250, 250), -1,
                   _AA, _SHIFT)
        reach = iris_r + 1.5
        lid = _scaled(ident.skin, 0.95)
        pen.fill(np.vstack([top, [(outer[0], cy - reach - 1), (inner[0], cy - reach - 1)]]), lid)
        pen.fill(np.vstack([bottom, [(outer[0], cy + reach), (inner[0], cy + reach)]]), ident.skin)
        pen.line(top, _scaled(ident.hair_color, 0.5), 1.6 if a[5] < 0.5 else 1.2)
        crease = _curve((inner[0] + side * 1.0, cy - up - 1.0), (cx, cy - up - 2.6 + 0.8 * a[7]),
                        (outer[0], cy - up - 0.8 - ident.eye_tilt), 10)
        pen.shade_line(crease, -0.25 * (1 - 0.7 * a[5]), 1)
        pen.shade_line(bottom, -0.2 - 0.35 * a[7], 1 + a[7])
        # Lid tightening bulges the lower lid (AU7).
        if a[7] > 0.05:
            pen.shade_line(bottom + (0, 1.8), 0.25 * a[7], 1)


def _cheeks(pen: _Pen, ident: Identity, a: dict):
    for side in (-1, 1):
        cx = side * (ident.eye_dx + 1.0)
        cy = ident.eye_y + 11.0 - 2.5 * a[6] - 1.0 * a[12]
        # Cheek raiser (AU6): the cheek bulges (highlight), a furrow forms under the eye, crow's feet at the corner.
        if a[6] > 0.05:
            pen.shade_fill(_ellipse_points(cx, cy, 7.0, 4.5), 0.22 * a[6])
            pen.shade_line(_curve((cx - side * 5, ident.eye_y + 4.5), (cx, ident.eye_y + 6.5 - 1.5 * a[6]),
                                  (cx + side * 5, ident.eye_y + 4.0), 10), -0.35 * a[6], 1)
            ox = side * (ident.eye_dx + ident.eye_w + 1.2)
            for dy in (-2.0, 0.0, 2.0):
                pen.shade_line([(ox, ident.eye_y + dy * 0.5), (ox + side * (3.5 + a[6]), ident.eye_y + dy * 1.3)],
                               -0.4 * a[6], 1)
        else:
            pen.shade_fill(_ellipse_points(cx, cy, 6.0, 4.0), 0.05)


def _nose(pen: _Pen, ident: Identity, a: dict):
    ny = ident.nose_y - 1.2 * a[9] - 0.6 * a[10]
    wing = ident.nose_w * (1 + 0.2 * a[9])
    for side in (-1, 1):
        pen.shade_line(_curve((side * 2.0, ident.eye_y + 2), (side * 2.6, (ident.eye_y + ny) / 2),
                              (side * (wing - 0.5), ny - 1.5), 8), -0.2, 1)
        pen.fill(_ellipse_points(side * (wing * 0.45), ny + 0.8, 1.4, 0.8), _scaled(ident.skin, 0.45))
        pen.shade_line(_curve((side * (wing * 0.3), ny + 1.8), (side * wing, ny + 1.0), (side * wing, ny - 1.8), 8),
                       -0.3, 1)
    pen.shade_fill(_ellipse_points(0, ny - 1.5, 2.2, 1.6), 0.12)
    # Nose wrinkler (AU9): wrinkles across the bridge.
    if a[9] > 0.05:
        for k in range(3):
            y = ident.eye_y + 2.5 + 2.2 * k
            pen.shade_line(_curve((-4.0, y + 0.8), (0, y - 0.4), (4.0, y + 0.8), 6), -0.45 * a[9], 1)
    return (0.0, ny)


def _mouth(pen: _Pen, ident: Identity, a: dict):
    my = ident.mouth_y
    corner_dy = ident.rest_mouth - 5.0 * a[12] + 4.5 * a[15] + 0.8 * a[20] - 0.5 * a[10]
    corner_dx = 3.0 * a[12] + 4.5 * a[20] - 1.5 * a[23] - 1.0 * a[24] - 0.5 * a[15] - 0.8 * a[17]
    thin = (1 - 0.3 * a[20]) * (1 - 0.4 * a[23]) * (1 - 0.55 * a[24])
    ut = ident.lip_upper * thin
    lt = ident.lip_lower * thin * (1 + 0.25 * a[17])
    part = 3.0 * a[25] + 7.0 * a[26]
    upper_in = my - 0.25 * part - 2.8 * a[10] - 0.5 * a[9] - 1.2 * a[17]
    lower_in = my + 0.75 * part - 1.8 * a[17]
    lower_in = max(lower_in, upper_in)
    hw = ident.mouth_w + corner_dx
    left, right = (-hw, my + corner_dy), (hw, my + corner_dy)

    top_in = _curve(left, (0, upper_in), right, 16)
    bottom_in = _curve(left, (0, lower_in), right, 16)
    bow = 0.55 * ut * np.exp(-(np.linspace(-1, 1, 16) / 0.18) ** 2)
    top_out = _curve(left, (0, upper_in - ut), right, 16) + np.stack([np.zeros(16), bow], 1)
    top_out[:, 1] -= 0.25 * ut * np.sin(np.linspace(0, math.pi, 16)) ** 4
    bottom_out = _curve(left, (0, lower_in + lt), right, 16)

    # Folds and bulges around the mouth.
    fold = 0.12 + 0.6 * a[12] + 0.3 * a[10] + 0.2 * a[9]
    for side in (-1, 1):
        start = (side * (ident.nose_w + 1.5), ident.nose_y + 1.0)
        end = (side * (hw + 2.5), my + corner_dy + 2.5)
        mid = ((start[0] + end[0]) / 2 + side * (1.5 + a[12]), (start[1] + end[1]) / 2)
        pen.shade_line(_curve(start, mid, end, 10), -0.35 * fold, 1)
        if a[15] > 0.05:
            pen.shade_line([(side * (hw + 0.5), my + corner_dy + 1.0), (side * (hw + 1.5), my + corner_dy + 6.0)],
                           -0.35 * a[15], 1)
        if a[20] > 0.05:
            pen.shade_line([(side * (hw + 0.8), my + corner_dy), (side * (hw + 4.5), my + corner_dy + 0.8)],
                           -0.35 * a[20], 1)
    if a[24] > 0.05:
        pen.shade_line(top_out - (0, 1.4), 0.25 * a[24], 1)
        pen.shade_line(bottom_out + (0, 1.4), 0.25 * a[24], 1)
    # Chin raiser (AU17): the lower lip is pushed up and a crease and a wrinkled boss form on the chin.
    chin_y = lower_in + lt + 4.0 - 1.0 * a[17]
    if a[17] > 0.05:
        pen.shade_line(_curve((-6.5, chin_y + 1.2), (0, chin_y - 0.5), (6.5, chin_y + 1.2), 10), -0.45 * a[17], 1)
        for x, y in ((-2.5, 3.5), (1.5, 4.5), (3.5, 2.8), (-0.5, 6.0), (-4.0, 5.5)):
            pen.shade_fill(_ellipse_points(x, chin_y + y, 0.9, 0.7, n=10), -0.35 * a[17])
    else:
        pen.shade_line(_curve((-4.5, chin_y + 0.8), (0, chin_y), (4.5, chin_y + 0.8), 10), -0.12, 1)

    if lower_in - upper_in > 0.3:
        pen.fill(np.vstack([top_in, bottom_in[::-1]]), (35, 25, 70))
        teeth_h = 3.2 * np.sin(np.linspace(0, math.pi, 16)) ** 0.6
        teeth = np.vstack([top_in, (top_in + np.stack([np.zeros(16), teeth_h], 1))[::-1]])
        pen.fill(teeth, (215, 225, 230))
        if lower_in - upper_in > 5.0:
            lower_teeth = np.vstack([bottom_in, (bottom_in - np.stack([np.zeros(16), 0.5 * teeth_h], 1))[::-1]])
            pen.fill(lower_teeth, (200, 210, 215))
    pen.fill(np.vstack([top_out, top_in[::-1]]), _scaled(ident.lip_color, 0.92))
    pen.fill(np.vstack([bottom_in, bottom_out[::-1]]), ident.lip_color)
    seam = 0.6 + 0.8 * a[23] + 0.8 * a[24]
    pen.line(top_in, _scaled(ident.lip_color, 0.5 - 0.15 * min(seam - 0.6, 1.0)), seam)
    if a[23] > 0.05 or a[24] > 0.05:
        pen.shade_line(top_out, -0.25 * max(a[23], a[24]), 1)
        pen.shade_line(bottom_out, -0.25 * max(a[23], a[24]), 1)
    return left, right


def _glasses(pen: _Pen, p: FaceParams, layer: np.ndarray):
    ident = p.identity
    frame = (30, 30, 35)
    r = ident.eye_w + 3.2
    for side in (-1, 1):
        centre = tuple(pen.pts([(side * ident.eye_dx, ident.eye_y + 0.5)])[0, 0])
        cv2.circle(layer, centre, int(r * _ONE), frame, 1, _AA, _SHIFT)
        temple = [(side * (ident.eye_dx + r), ident.eye_y - 0.5), (side * ident.face_w, ident.eye_y - 1.5)]
        pen.line(temple, frame, 1, target=layer)
    pen.line([(-ident.eye_dx + r, ident.eye_y), (0, ident.eye_y - 1.5), (ident.eye_dx - r, ident.eye_y)], frame, 1,
             target=layer)


# ---------------------------------------------------------------------------------------------------- imaging


@functools.lru_cache(maxsize=8)
def _grid(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates as fractions of the canvas, centred: (y, x) in [-0.5, 0.5)."""
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas - 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _background(c: Conditions, rng: np.random.Generator, canvas: int) -> np.ndarray:
    base = rng.integers(40, 220, 3).astype(np.float32)
    if not c.clutter:
        return np.full((canvas, canvas, 3), 128, np.float32)
    yy, xx = _grid(canvas)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle) + 0.5)[..., None]
    image = base + ramp * rng.uniform(-60, 60, 3).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(c.clutter):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        x, y = (int(v) for v in rng.integers(-canvas // 4, canvas + canvas // 4, 2))
        size = int(rng.integers(canvas // 20, canvas // 3))
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + size, y + int(rng.integers(canvas // 20, canvas // 2))), color, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), size // 2, color, int(rng.choice([-1, 2, 3])), cv2.LINE_AA)
        elif kind == 2:
            end = tuple(int(v) for v in rng.integers(0, canvas, 2))
            cv2.line(image, (x, y), end, color, int(rng.integers(1, 5)), cv2.LINE_AA)
        else:
            cv2.ellipse(image, (x, y), (size // 2, size // 4), float(rng.uniform(0, 180)), 0, 360, color, -1,
                        cv2.LINE_AA)
    return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.8, 2.5)).astype(np.float32)


def _imaging(image: np.ndarray, c: Conditions, rng: np.random.Generator) -> np.ndarray:
    canvas = image.shape[0]
    if c.light_strength or c.brightness != 1.0 or tuple(c.tint) != (1.0, 1.0, 1.0):
        yy, xx = _grid(canvas)
        ramp = 1.0 + c.light_strength * 2.0 * (xx * math.cos(c.light_angle) + yy * math.sin(c.light_angle))
        gain = (c.brightness * ramp)[..., None] * np.asarray(c.tint, np.float32)
        image = image * gain
    if c.blur > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), c.blur * canvas / 160.0)
    if c.noise > 0:
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(c.noise)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
