"""Procedural articulated-person renderer (numpy + OpenCV, CPU only).

A person is a 3D skeleton (metres; x = the person's left, y = up, z = forward) posed by
a walking cycle, turned by a yaw angle, projected orthographically and drawn as
tapered capsules, polygons and ellipses into two buffers: a *material* map (which
garment or body part owns each pixel) and a *shade* map. Colours and patterns are
applied afterwards from the outfit, so one body in one pose gives the same silhouette
of head, hair, skin and limbs whatever it wears. Drawing happens at ``ss`` times the
output size and is reduced with area averaging for anti-aliasing.

Why not a mesh body model: see synth/README.md ("Why a procedural renderer").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .body import HAIR_STYLES, Body
from .outfit import Accessories, Outfit

# Materials (finer than mask labels).
M_BG, M_SKIN, M_HAIR, M_TOP, M_BOTTOM, M_SHOES, M_OUTER, M_BAG, M_TOP2, M_FACE, M_SOLE, M_GLASSES, M_OWN_BAG = range(13)
N_MATERIALS = 13

# Mask labels written to disk (contract): 0 bg, 1 skin, 2 hair, 3 top, 4 bottom, 5 shoes, 6 outerwear/bag.
# 7 marks what a person keeps across outfits (glasses, their own bag): not clothes, not body.
LABELS: dict[int, str] = {0: "background", 1: "skin", 2: "hair", 3: "top", 4: "bottom", 5: "shoes", 6: "outerwear_bag",
                          7: "accessory"}
N_LABELS = len(LABELS)
CLOTHES_LABELS = (3, 4, 5, 6)
MATERIAL_TO_LABEL = np.array([0, 1, 2, 3, 4, 5, 6, 6, 3, 1, 5, 7, 7], dtype=np.uint8)

_SHIFT = 4  # fixed-point bits for sub-pixel OpenCV drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Pose:
    yaw: float  # radians; 0 = facing the camera, pi = back view, +pi/2 = facing screen-left
    phase: float  # walking-cycle phase in radians
    walking: float = 1.0  # 0 = standing still, 1 = full stride


@dataclass
class Sprite:
    """A rendered person on a transparent canvas (output resolution)."""

    rgb: np.ndarray  # float32 (h, w, 3) in [0, 1], RGB, premultiplied by nothing
    alpha: np.ndarray  # float32 (h, w) in [0, 1]
    labels: np.ndarray  # uint8 (h, w), mask labels (see LABELS)
    foot: tuple[float, float]  # ground point between the feet (x, y) in sprite pixels


def _rot_lean(p: np.ndarray, hip_y: float, lean: float) -> np.ndarray:
    """Lean the upper body forward around the hip height (in the y-z plane)."""
    dy = p[1] - hip_y
    return np.array([p[0], hip_y + dy * math.cos(lean), p[2] + dy * math.sin(lean)])


class _Canvas:
    """Material and shade buffers plus the projection from metres to pixels."""

    def __init__(self, h: int, w: int, scale: float, ox: float, oy: float, cos_y: float, sin_y: float):
        self.mat = np.zeros((h, w), np.uint8)
        self.shade = np.ones((h, w), np.float32)
        self.scale, self.ox, self.oy = scale, ox, oy
        self.c, self.s = cos_y, sin_y

    def proj(self, p: np.ndarray) -> np.ndarray:
        xs = p[0] * self.c - p[2] * self.s
        return np.array([self.ox + xs * self.scale, self.oy - p[1] * self.scale])

    def depth(self, p: np.ndarray) -> float:
        return float(p[0] * self.s + p[2] * self.c)

    def poly(self, pts2d: np.ndarray, material: int, shade: float = 1.0) -> None:
        pts = np.round(np.asarray(pts2d) * _ONE).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.mat, [pts], int(material), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.shade, [pts], float(shade), cv2.LINE_8, _SHIFT)

    def circle(self, c2d: np.ndarray, r_px: float, material: int, shade: float = 1.0) -> None:
        c = (int(round(c2d[0] * _ONE)), int(round(c2d[1] * _ONE)))
        r = max(1, int(round(r_px * _ONE)))
        cv2.circle(self.mat, c, r, int(material), -1, cv2.LINE_8, _SHIFT)
        cv2.circle(self.shade, c, r, float(shade), -1, cv2.LINE_8, _SHIFT)

    def ellipse(self, c2d: np.ndarray, ax: float, ay: float, material: int, shade: float = 1.0) -> None:
        c = (int(round(c2d[0] * _ONE)), int(round(c2d[1] * _ONE)))
        axes = (max(1, int(round(ax * _ONE))), max(1, int(round(ay * _ONE))))
        cv2.ellipse(self.mat, c, axes, 0.0, 0.0, 360.0, int(material), -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(self.shade, c, axes, 0.0, 0.0, 360.0, float(shade), -1, cv2.LINE_8, _SHIFT)

    def capsule(self, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, material: int, shade: float = 1.0) -> None:
        """Tapered limb between 3D points p0 and p1 with radii r0, r1 (metres)."""
        a, b = self.proj(p0), self.proj(p1)
        ra, rb = r0 * self.scale, r1 * self.scale
        d = b - a
        n = np.array([-d[1], d[0]])
        ln = float(np.hypot(*n))
        if ln > 1e-6:
            n = n / ln
            self.poly(np.array([a + n * ra, b + n * rb, b - n * rb, a - n * ra]), material, shade)
        self.circle(a, ra, material, shade)
        self.circle(b, rb, material, shade)


@dataclass
class _Skeleton:
    hip_y: float
    shoulder_y: float
    waist_y: float
    head_c: np.ndarray
    head_h: float
    head_w: float
    neck_base: np.ndarray
    hips: dict[int, np.ndarray]
    knees: dict[int, np.ndarray]
    ankles: dict[int, np.ndarray]
    toes: dict[int, np.ndarray]
    heels: dict[int, np.ndarray]
    shoulders: dict[int, np.ndarray]
    elbows: dict[int, np.ndarray]
    wrists: dict[int, np.ndarray]
    torso_c: dict[str, np.ndarray]  # centre line points at named levels


def _skeleton(b: Body, pose: Pose) -> _Skeleton:
    H = b.height_m
    head_h = b.head_ratio * H
    head_w = head_h * b.head_aspect
    neck = b.neck_ratio * H
    ankle_h = 0.045 * H
    hip_y = b.leg_ratio * H
    shoulder_y = H - head_h - neck
    torso_len = shoulder_y - hip_y
    waist_y = hip_y + 0.30 * torso_len
    thigh = shin = 0.5 * (hip_y - ankle_h)
    foot_len = 0.15 * H
    stride = b.stride * pose.walking
    swing = b.arm_swing * pose.walking
    lean = b.lean + 0.03 * pose.walking

    hips, knees, ankles, toes, heels = {}, {}, {}, {}, {}
    for side in (1, -1):  # +1 = left, -1 = right
        ph = pose.phase + (0.0 if side == 1 else math.pi)
        th = stride * math.sin(ph)
        knee_flex = (1.1 * stride + 0.08) * max(0.0, math.cos(ph)) ** 1.5 * pose.walking + 0.05
        hip = np.array([side * b.hip_ratio * H * 0.55, hip_y, 0.0])
        knee = hip + thigh * np.array([0.0, -math.cos(th), math.sin(th)])
        a2 = th - knee_flex
        ankle = knee + shin * np.array([0.0, -math.cos(a2), math.sin(a2)])
        toe = ankle + np.array([0.0, -ankle_h * 0.75, foot_len * 0.72])
        heel = ankle + np.array([0.0, -ankle_h * 0.85, -foot_len * 0.22])
        hips[side], knees[side], ankles[side], toes[side], heels[side] = hip, knee, ankle, toe, heel
    # Stand on the ground: the lowest foot point touches y = 0 (gives a natural bob).
    low = min(min(toes[s][1], heels[s][1]) for s in (1, -1))
    dy = -low
    for d in (hips, knees, ankles, toes, heels):
        for s in (1, -1):
            d[s] = d[s] + np.array([0.0, dy, 0.0])
    hip_y += dy
    shoulder_y += dy
    waist_y += dy

    shoulders, elbows, wrists = {}, {}, {}
    upper = b.arm_ratio * H * 0.55
    fore = b.arm_ratio * H * 0.42
    for side in (1, -1):
        ph = pose.phase + (math.pi if side == 1 else 0.0)  # arms swing against the legs
        al = swing * math.sin(ph)
        flex = 0.15 + 0.35 * max(0.0, math.sin(ph)) * pose.walking
        sh = _rot_lean(np.array([side * b.shoulder_ratio * H * 0.92, shoulder_y - 0.02 * H, 0.0]), hip_y, lean)
        out = side * b.arm_thick * H * 0.6
        el = sh + np.array([out, -upper * math.cos(al), upper * math.sin(al)])
        wr = el + np.array([out * 0.3, -fore * math.cos(al + flex), fore * math.sin(al + flex)])
        shoulders[side], elbows[side], wrists[side] = sh, el, wr

    head_c = _rot_lean(np.array([0.0, shoulder_y + neck + head_h * 0.5, 0.0]), hip_y, lean)
    neck_base = _rot_lean(np.array([0.0, shoulder_y, 0.0]), hip_y, lean)
    torso_c = {
        "neck": _rot_lean(np.array([0.0, shoulder_y + 0.02 * H, 0.0]), hip_y, lean),
        "shoulder": _rot_lean(np.array([0.0, shoulder_y - 0.015 * H, 0.0]), hip_y, lean),
        "chest": _rot_lean(np.array([0.0, shoulder_y - 0.09 * H, 0.0]), hip_y, lean),
        "waist": _rot_lean(np.array([0.0, waist_y, 0.0]), hip_y, lean),
        "hip": np.array([0.0, hip_y, 0.0]),
    }
    return _Skeleton(
        hip_y, shoulder_y, waist_y, head_c, head_h, head_w, neck_base,
        hips, knees, ankles, toes, heels, shoulders, elbows, wrists, torso_c,
    )


def _half_width(half_w: float, half_d: float, c: float, s: float) -> float:
    """Projected half-width of an elliptic cross-section turned by the yaw."""
    return math.sqrt((half_w * c) ** 2 + (half_d * s) ** 2)


def _band(cv: _Canvas, levels: list[tuple[np.ndarray, float]], material: int, shade: float = 1.0) -> None:
    """Polygon through centre points with projected half-widths (pixels)."""
    left, right = [], []
    for p, hw in levels:
        c = cv.proj(p)
        left.append(c - np.array([hw * cv.scale, 0.0]))
        right.append(c + np.array([hw * cv.scale, 0.0]))
    cv.poly(np.array(left + right[::-1]), material, shade)


def _torso_levels(sk: _Skeleton, b: Body, cv: _Canvas, grow: float, down_to: float) -> list[tuple[np.ndarray, float]]:
    H = b.height_m
    c, s = abs(cv.c), abs(cv.s)
    depth = b.depth_ratio * H * 0.5
    sw = b.shoulder_ratio * H
    hw = b.hip_ratio * H
    waist_w = 0.5 * (sw + hw) * 0.82
    pts = [
        (sk.torso_c["neck"], _half_width(0.045 * H, 0.045 * H, c, s) * grow),
        (sk.torso_c["shoulder"], _half_width(sw, depth * 0.8, c, s) * grow),
        (sk.torso_c["chest"], _half_width(sw * 0.95, depth, c, s) * grow),
        (sk.torso_c["waist"], _half_width(waist_w, depth * 0.95, c, s) * grow),
    ]
    hip_p = sk.torso_c["hip"]
    if down_to >= sk.hip_y:
        frac = (sk.torso_c["waist"][1] - down_to) / max(1e-6, sk.torso_c["waist"][1] - sk.hip_y)
        p = sk.torso_c["waist"] + (hip_p - sk.torso_c["waist"]) * frac
        w = waist_w + (hw * 1.05 - waist_w) * frac
        pts.append((p, _half_width(w, depth * 0.95, c, s) * grow))
    else:
        pts.append((hip_p, _half_width(hw * 1.05, depth * 0.95, c, s) * grow))
        flare = 1.0 + 0.25 * min(1.0, (sk.hip_y - down_to) / (0.3 * H))
        pts.append((np.array([hip_p[0], down_to, hip_p[2]]), _half_width(hw * 1.1 * flare, depth * flare, c, s) * grow))
    return pts


def _draw_leg(cv: _Canvas, sk: _Skeleton, b: Body, o: Outfit, side: int, shade: float) -> None:
    H = b.height_m
    r_th = b.leg_thick * H
    r_kn = r_th * 0.68
    r_an = r_th * 0.42
    hip, knee, ankle = sk.hips[side], sk.knees[side], sk.ankles[side]
    cv.capsule(hip, knee, r_th, r_kn, M_SKIN, shade)
    cv.capsule(knee, ankle, r_kn, r_an, M_SKIN, shade)
    g = o.fit
    if o.bottom_type == "trousers":
        cv.capsule(hip, knee, r_th * g, r_kn * g, M_BOTTOM, shade)
        cv.capsule(knee, ankle + (knee - ankle) * 0.05, r_kn * g, r_an * g * 1.15, M_BOTTOM, shade)
    elif o.bottom_type == "shorts":
        end = hip + (knee - hip) * 0.62
        cv.capsule(hip, end, r_th * g, r_th * 0.85 * g, M_BOTTOM, shade)
    # Shoes (and boot shafts).
    toe, heel = sk.toes[side], sk.heels[side]
    if o.shoe_type == "boots":
        cv.capsule(ankle + (knee - ankle) * 0.3, ankle, r_an * 1.25, r_an * 1.25, M_SHOES, shade)
    foot_r = 0.022 * H
    cv.capsule(heel + np.array([0.0, foot_r, 0.0]), toe + np.array([0.0, foot_r * 0.8, 0.0]), foot_r * 1.1, foot_r * 0.85, M_SHOES, shade)
    cv.capsule(ankle + np.array([0.0, -0.2 * foot_r, 0.0]), heel + np.array([0.0, foot_r, 0.0]), r_an * 1.05, foot_r * 1.1, M_SHOES, shade)
    if o.shoe_type == "sneakers":
        cv.capsule(heel + np.array([0.0, 0.35 * foot_r, 0.0]), toe + np.array([0.0, 0.35 * foot_r, 0.0]), foot_r * 0.45, foot_r * 0.4, M_SOLE, shade)


def _draw_arm(cv: _Canvas, sk: _Skeleton, b: Body, o: Outfit, side: int, shade: float) -> None:
    H = b.height_m
    r_up = b.arm_thick * H
    r_el = r_up * 0.8
    r_wr = r_up * 0.55
    sh, el, wr = sk.shoulders[side], sk.elbows[side], sk.wrists[side]
    cv.capsule(sh, el, r_up, r_el, M_SKIN, shade)
    cv.capsule(el, wr, r_el, r_wr, M_SKIN, shade)
    hand = wr + (wr - el) * 0.18
    cv.circle(cv.proj(hand), r_wr * 1.45 * cv.scale, M_SKIN, shade)
    g = o.fit
    if o.top_type == "tshirt":
        cv.capsule(sh, sh + (el - sh) * 0.5, r_up * g * 1.1, r_up * g, M_TOP, shade)
    elif o.top_type == "longsleeve":
        cv.capsule(sh, el, r_up * g, r_el * g, M_TOP, shade)
        cv.capsule(el, wr, r_el * g, r_wr * g * 1.1, M_TOP, shade)
    if o.outer_type != "none":
        go = g * 1.06
        cv.capsule(sh, el, r_up * go, r_el * go, M_OUTER, shade)
        cv.capsule(el, wr, r_el * go, r_wr * go * 1.1, M_OUTER, shade)


def _hair_region(
    cv: _Canvas, centre: np.ndarray, a: float, bb: float, b: Body, yaw: float, style: str, beard: bool
) -> None:
    """Rasterise scalp hair and beard over the head ellipse (pixels; a, bb = half axes)."""
    vol = b.hair_volume
    grow = {"bald": 0.0, "buzz": 0.02, "short": 0.06 + 0.06 * vol, "medium": 0.10 + 0.08 * vol,
            "long": 0.08 + 0.08 * vol, "ponytail": 0.05, "bun": 0.05, "curly": 0.22 + 0.15 * vol}[style]
    face = -0.60 + 0.40 * b.fringe
    side, back = {
        "bald": (0.0, 0.0), "buzz": (-0.05, 0.45), "short": (0.05, 0.55), "medium": (0.55, 0.85),
        "long": (0.95, 1.0), "ponytail": (0.15, 0.55), "bun": (0.15, 0.55), "curly": (0.35, 0.7),
    }[style]
    if style == "buzz":
        face = -0.62
    ea, eb = a * (1.0 + grow), bb * (1.0 + grow * 0.8)
    cy_shift = -bb * grow * 0.35
    x0 = int(math.floor(centre[0] - ea - 2))
    x1 = int(math.ceil(centre[0] + ea + 2))
    y0 = int(math.floor(centre[1] + cy_shift - eb - 2))
    y1 = int(math.ceil(centre[1] + bb * 1.1 + 2))
    h, w = cv.mat.shape
    x0c, x1c, y0c, y1c = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x1c <= x0c or y1c <= y0c:
        return
    ys, xs = np.mgrid[y0c:y1c, x0c:x1c].astype(np.float32) + 0.5
    u = np.clip((xs - centre[0]) / ea, -1.0, 1.0)
    g = np.cos(np.arcsin(u) + yaw)  # 1 at the face centre, -1 at the back of the head
    rel = (ys - centre[1]) / bb
    if style != "bald":
        line = np.where(g >= 0, side + (face - side) * g, side + (back - side) * (-g))
        r = ((xs - centre[0]) / ea) ** 2 + ((ys - centre[1] - cy_shift) / eb) ** 2
        if style == "curly":
            ang = np.arctan2(ys - centre[1], xs - centre[0])
            r = r / (1.0 + 0.10 * np.sin(ang * 11.0)) ** 2
        inside_head = ((xs - centre[0]) / a) ** 2 + ((ys - centre[1]) / bb) ** 2 <= 1.0
        hair = (r <= 1.0) & ((rel < line) | ~inside_head) & (rel < max(side, back) + 0.05)
        cv.mat[y0c:y1c, x0c:x1c][hair] = M_HAIR
        cv.shade[y0c:y1c, x0c:x1c][hair] = 1.0
    if beard:
        inside = ((xs - centre[0]) / a) ** 2 + ((ys - centre[1]) / bb) ** 2 <= 1.0
        bd = inside & (rel > 0.42) & (g > 0.05)
        cv.mat[y0c:y1c, x0c:x1c][bd] = M_HAIR
        cv.shade[y0c:y1c, x0c:x1c][bd] = 0.9


def _draw_back_hair(cv: _Canvas, sk: _Skeleton, b: Body, style: str) -> None:
    """Long hair hanging down the back, ponytail or bun: the parts behind the head."""
    H = b.height_m
    a = sk.head_w * 0.5
    bb = sk.head_h * 0.5
    back = np.array([0.0, 0.0, -1.0])
    if style == "long":
        top = sk.head_c + back * a * 0.2
        length = bb + 0.06 * H + b.hair_length * 0.16 * H
        bot = top + np.array([0.0, -length, -0.02 * H])
        wt = _half_width(a * 1.05, a * 0.9, abs(cv.c), abs(cv.s))
        wb = _half_width(a * 1.25, a * 0.6, abs(cv.c), abs(cv.s))
        _band(cv, [(top, wt), (bot, wb)], M_HAIR)
        cv.circle(cv.proj(bot), wb * cv.scale, M_HAIR)
    elif style == "ponytail":
        root = sk.head_c + back * a * 1.0 + np.array([0.0, 0.1 * bb, 0.0])
        tip = root + np.array([0.0, -(0.5 * bb + b.hair_length * 1.4 * bb), -0.2 * a])
        cv.capsule(root, tip, 0.28 * a, 0.14 * a, M_HAIR)
    elif style == "bun":
        c = sk.head_c + back * a * 0.7 + np.array([0.0, 0.75 * bb, 0.0])
        cv.circle(cv.proj(c), 0.38 * a * cv.scale, M_HAIR)


def _draw_head(cv: _Canvas, sk: _Skeleton, b: Body, yaw: float, glasses: bool = False) -> None:
    H = b.height_m
    style = HAIR_STYLES[b.hair_style]
    cv.capsule(sk.neck_base, sk.head_c - np.array([0.0, sk.head_h * 0.3, 0.0]), 0.033 * H, 0.03 * H, M_SKIN)
    c = cv.proj(sk.head_c)
    a = _half_width(sk.head_w * 0.5, sk.head_w * 0.6, abs(cv.c), abs(cv.s)) * cv.scale
    bb = sk.head_h * 0.5 * cv.scale
    cv.ellipse(c, a, bb, M_SKIN)
    hw = sk.head_w * 0.5
    # Nose (a bump that shows in profile) and eyes/mouth when the face is visible.
    nose = sk.head_c + np.array([0.0, -0.05 * sk.head_h, hw * 1.02])
    if cv.depth(nose - sk.head_c) > -0.2 * hw:
        cv.circle(cv.proj(nose), 0.16 * hw * cv.scale, M_SKIN)
    for e in (1, -1):
        eye = sk.head_c + np.array([e * 0.36 * hw, 0.02 * sk.head_h, hw * 0.9])
        if cv.depth(eye - sk.head_c) > 0.3 * hw:
            cv.circle(cv.proj(eye), max(0.55, 0.1 * hw * cv.scale), M_FACE)
    mouth = sk.head_c + np.array([0.0, -0.28 * sk.head_h, hw * 0.92])
    if cv.depth(mouth - sk.head_c) > 0.3 * hw:
        m = cv.proj(mouth)
        cv.ellipse(m, max(0.6, 0.22 * hw * cv.scale * abs(cv.c)), max(0.5, 0.05 * hw * cv.scale), M_FACE)
    _hair_region(cv, c, a, bb, b, yaw, style, b.beard)
    if glasses:  # lenses over the eyes and a frame to the ears: seen from the front and the side
        lenses = []
        for e in (1, -1):
            eye = sk.head_c + np.array([e * 0.36 * hw, 0.02 * sk.head_h, hw * 0.95])
            if cv.depth(eye - sk.head_c) > -0.1 * hw:
                cv.circle(cv.proj(eye), max(0.8, 0.2 * hw * cv.scale), M_GLASSES)
                lenses.append(eye)
            temple = sk.head_c + np.array([e * 0.98 * hw, 0.04 * sk.head_h, 0.1 * hw])
            if abs(cv.s) > 0.35 and cv.depth(temple - sk.head_c) > 0.0:
                cv.capsule(eye, temple, 0.025 * hw, 0.025 * hw, M_GLASSES)
        if len(lenses) == 2:
            cv.capsule(lenses[0], lenses[1], 0.03 * hw, 0.03 * hw, M_GLASSES)


def _draw_torso_garments(cv: _Canvas, sk: _Skeleton, b: Body, o: Outfit) -> None:
    H = b.height_m
    torso_len = sk.shoulder_y - sk.hip_y
    g = (1.0 + o.fit) * 0.5
    # Bottom garment around the pelvis (waist to crotch).
    hw = b.hip_ratio * H
    depth = b.depth_ratio * H * 0.5
    c, s = abs(cv.c), abs(cv.s)
    crotch = np.array([0.0, sk.hip_y - 0.05 * H, 0.0])
    _band(
        cv,
        [(sk.torso_c["waist"], _half_width(hw * 0.98, depth * 0.95, c, s) * g),
         (sk.torso_c["hip"], _half_width(hw * 1.08, depth, c, s) * g),
         (crotch, _half_width(hw * 1.0, depth * 0.9, c, s) * g)],
        M_BOTTOM,
    )
    if o.bottom_type == "skirt":
        knee_y = 0.5 * (sk.knees[1][1] + sk.knees[-1][1]) + 0.03 * H
        _band(
            cv,
            [(sk.torso_c["waist"], _half_width(hw * 0.98, depth, c, s) * g),
             (np.array([0.0, knee_y, 0.0]), _half_width(hw * 1.6, depth * 1.5, c, s) * g)],
            M_BOTTOM,
        )
    # Top.
    hem = sk.waist_y - o.top_length * torso_len
    _band(cv, _torso_levels(sk, b, cv, g, hem), M_TOP)
    facing = cv.c
    if o.top_pattern == "logo" and facing > 0.35:
        ch = sk.torso_c["chest"] + np.array([0.0, -0.03 * H, 0.1 * H])
        p = cv.proj(ch)
        hwp = 0.045 * H * cv.scale * facing
        cv.poly(np.array([p + [-hwp, -hwp * 0.8], p + [hwp, -hwp * 0.8], p + [hwp, hwp * 0.8], p + [-hwp, hwp * 0.8]]), M_TOP2)
    if o.outer_type != "none":
        down = hem - 0.03 * H if o.outer_type == "jacket" else 0.5 * (sk.knees[1][1] + sk.knees[-1][1]) - 0.02 * H
        levels = _torso_levels(sk, b, cv, g * 1.08, down)
        _band(cv, levels, M_OUTER)
        if o.outer_open and facing > 0.3:
            # Open front: a strip of the top (and below the top's hem, the bottom) shows.
            strip = 0.035 * H * facing
            upper = [(p, strip) for p, _ in levels if p[1] >= hem]
            if upper:
                _band(cv, upper + [(np.array([upper[-1][0][0], max(hem, down), upper[-1][0][2]]), strip)], M_TOP)
            if down < hem:
                _band(cv, [(np.array([0.0, hem, 0.0]), strip), (np.array([0.0, down, 0.0]), strip * 1.2)], M_BOTTOM)


def _draw_bag(cv: _Canvas, sk: _Skeleton, b: Body, o: Outfit, stage: str, material: int = M_BAG) -> None:
    """Backpack or shoulder bag; ``stage`` is 'behind' or 'front' of the torso; ``material`` tells the outfit's
    bag from the person's own one (which no outfit change removes)."""
    H = b.height_m
    depth = b.depth_ratio * H * 0.5
    if o.bag_type == "backpack":
        centre = _rot_lean(np.array([0.0, sk.shoulder_y - 0.15 * H, -depth - 0.025 * H]), sk.hip_y, b.lean)
        away = cv.c <= -0.3  # seen from behind: the pack covers the back
        if stage == "front" and not away:
            if cv.c > 0.3:  # facing the camera: only the straps show over the chest
                for e in (1, -1):
                    top = sk.shoulders[e] + np.array([-e * 0.03 * H, 0.01 * H, 0.02 * H])
                    bot = sk.torso_c["chest"] + np.array([e * 0.07 * H, -0.07 * H, depth])
                    cv.capsule(top, bot, 0.012 * H, 0.012 * H, material)
            return
        if stage == "behind" and away:
            return
        half_w = _half_width(0.15 * H / 1.7, 0.08 * H / 1.7, abs(cv.c), abs(cv.s))
        half_h = 0.22 * H / 1.7
        p = cv.proj(centre)
        wpx, hpx = half_w * cv.scale, half_h * cv.scale
        cv.poly(np.array([p + [-wpx, -hpx], p + [wpx, -hpx], p + [wpx, hpx], p + [-wpx, hpx]]), material, 0.95)
        cv.circle(p + [0, -hpx], wpx * 0.95, material, 0.95)
    elif o.bag_type == "shoulder":
        side = 1
        centre = np.array([side * (b.hip_ratio * H + 0.05 * H), sk.hip_y + 0.02 * H, 0.02 * H])
        in_front = cv.depth(centre) >= -0.02 * H
        if (stage == "front") != in_front:
            return
        if abs(cv.c) > 0.2 and stage == "front":
            top = sk.shoulders[-side] + np.array([0.0, 0.01 * H, 0.0])
            cv.capsule(top, centre + np.array([0.0, 0.06 * H, 0.0]), 0.008 * H, 0.008 * H, material)
        half_w = _half_width(0.13 * H / 1.7, 0.05 * H / 1.7, abs(cv.c), abs(cv.s))
        p = cv.proj(centre)
        wpx, hpx = half_w * cv.scale, 0.1 * H / 1.7 * cv.scale
        cv.poly(np.array([p + [-wpx, -hpx], p + [wpx, -hpx], p + [wpx, hpx], p + [-wpx, hpx]]), material, 0.92)


def _texture(mat: np.ndarray, o: Outfit, b: Body, scale: float, ox: float, oy: float) -> np.ndarray:
    """Per-pixel base colour (float32 RGB) from materials, outfit colours and patterns."""
    h, w = mat.shape
    flat = np.zeros((N_MATERIALS, 3), np.float32)
    skin = b.skin_rgb
    flat[M_SKIN] = skin
    flat[M_HAIR] = b.hair_rgb if HAIR_STYLES[b.hair_style] != "buzz" else 0.55 * np.array(b.hair_rgb) + 0.45 * skin
    flat[M_TOP] = o.top_rgb
    flat[M_TOP2] = o.top_rgb2
    flat[M_BOTTOM] = o.bottom_rgb
    flat[M_SHOES] = o.shoe_rgb
    flat[M_SOLE] = (0.93, 0.93, 0.92)
    flat[M_OUTER] = o.outer_rgb
    flat[M_BAG] = o.bag_rgb
    flat[M_FACE] = skin * 0.35
    col = flat[mat]
    ys, xs = np.nonzero((mat == M_TOP) | (mat == M_BOTTOM) | (mat == M_HAIR))
    if ys.size:
        X = (xs + 0.5 - ox) / scale  # metres, so patterns keep their size at every scale
        Y = (oy - ys - 0.5) / scale
        m = mat[ys, xs]
        # Top pattern.
        sel = m == M_TOP
        p = o.top_period
        if o.top_pattern == "hstripes":
            alt = (np.floor(Y[sel] / p) % 2) == 1
        elif o.top_pattern == "vstripes":
            alt = (np.floor(X[sel] / p) % 2) == 1
        elif o.top_pattern == "checks":
            alt = ((np.floor(X[sel] / p) + np.floor(Y[sel] / p)) % 2) == 1
        elif o.top_pattern == "dots":
            fx = (X[sel] / p) % 1.0 - 0.5
            fy = (Y[sel] / p) % 1.0 - 0.5
            alt = fx * fx + fy * fy < 0.08
        else:
            alt = np.zeros(int(sel.sum()), bool)
        tsel = np.nonzero(sel)[0][alt]
        col[ys[tsel], xs[tsel]] = o.top_rgb2
        sel = m == M_BOTTOM
        if o.bottom_pattern == "denim":
            fib = 1.0 + 0.07 * np.sin((X[sel] + Y[sel]) * 900.0) + 0.04 * np.sin(Y[sel] * 310.0)
            col[ys[sel], xs[sel]] *= fib[:, None].astype(np.float32)
        elif o.bottom_pattern in ("checks", "hstripes"):
            q = 0.07
            if o.bottom_pattern == "checks":
                alt = ((np.floor(X[sel] / q) + np.floor(Y[sel] / q)) % 2) == 1
            else:
                alt = (np.floor(Y[sel] / q) % 2) == 1
            bsel = np.nonzero(sel)[0][alt]
            col[ys[bsel], xs[bsel]] = o.bottom_rgb2
        sel = m == M_HAIR
        strands = 1.0 + 0.10 * np.sin(X[sel] * 700.0 + 3.0 * np.sin(Y[sel] * 90.0))
        col[ys[sel], xs[sel]] *= strands[:, None].astype(np.float32)
    return col


def label_coverage(labels: np.ndarray, size_wh: tuple[int, int], interpolation: int) -> np.ndarray:
    """Share of each mask label in every pixel after resizing ``labels`` to ``size_wh``: (h, w, N_LABELS) float32.

    Resized with the same interpolation as the image, so a pixel gets a share of a label exactly when the image's
    resize mixed that part's colour into it.
    """
    onehot = (labels[..., None] == np.arange(N_LABELS, dtype=labels.dtype)).astype(np.float32)
    if onehot.shape[1::-1] == tuple(size_wh):
        return onehot
    # OpenCV resizes at most 4 channels at a time with INTER_AREA.
    parts = [cv2.resize(np.ascontiguousarray(onehot[..., i:i + 4]), size_wh, interpolation=interpolation)
             for i in range(0, N_LABELS, 4)]
    return np.concatenate([p.reshape(size_wh[1], size_wh[0], -1) for p in parts], axis=-1)


def coverage_labels(cov: np.ndarray) -> np.ndarray:
    """One mask label per pixel from label shares, so that no part's colour sits outside its mask.

    A pixel with any clothes in it is clothes (the clothes label with the largest share): erasing the clothes
    labels then leaves no clothes-coloured rim. Otherwise it is the largest of skin, hair and accessory
    whenever the person covers any of it, and background only where the person does not reach.
    """
    eps = 1e-6
    clothes = np.asarray(CLOTHES_LABELS)
    other = np.array([lab for lab in range(1, N_LABELS) if lab not in CLOTHES_LABELS])
    c_share, o_share = cov[..., clothes], cov[..., other]
    out = np.zeros(cov.shape[:2], np.uint8)
    has_other = o_share.max(-1) > eps
    out[has_other] = other[o_share.argmax(-1)][has_other]
    has_clothes = c_share.max(-1) > eps
    out[has_clothes] = clothes[c_share.argmax(-1)][has_clothes]
    return out


def render_person(b: Body, o: Outfit, pose: Pose, px_height: float, ss: int = 2,
                  acc: Accessories | None = None) -> Sprite:
    """Render one person ``px_height`` pixels tall (at output resolution), with the accessories they keep."""
    if px_height < 8:
        raise ValueError(f"px_height must be >= 8 pixels, got {px_height}")
    yaw = float(pose.yaw)
    c, s = math.cos(yaw), math.sin(yaw)
    sk = _skeleton(b, pose)
    scale = px_height * ss / b.height_m
    H = b.height_m
    # Canvas bounds: all joints plus generous margins for radii, hair and bags.
    pts = [sk.head_c, *sk.toes.values(), *sk.heels.values(), *sk.wrists.values(), *sk.elbows.values(), *sk.knees.values()]
    xs = [p[0] * c - p[2] * s for p in pts]
    margin = 0.16 * H
    xmin, xmax = min(xs) - margin, max(xs) + margin
    top = sk.head_c[1] + sk.head_h * 0.85
    w = int(math.ceil((xmax - xmin) * scale)) + 4
    h = int(math.ceil((top + 0.02 * H) * scale)) + 4
    w += (-w) % ss
    h += (-h) % ss
    ox = -xmin * scale + 2
    oy = h - 2 - 0.01 * H * scale
    cv = _Canvas(h, w, scale, ox, oy, c, s)

    style = HAIR_STYLES[b.hair_style]
    facing = c
    long_back = style in ("long", "ponytail", "bun")
    if long_back and facing > 0.3:
        _draw_back_hair(cv, sk, b, style)
    own_bag = acc is not None and acc.bag_type != "none"
    bag_o = replace(o, bag_type=acc.bag_type) if own_bag else o  # the person's bag replaces the outfit's
    bag_material = M_OWN_BAG if own_bag else M_BAG
    _draw_bag(cv, sk, b, bag_o, "behind", bag_material)
    # Far arm behind the body in side-ish views.
    arm_depth = {sd: cv.depth(sk.shoulders[sd]) for sd in (1, -1)}
    far_arm = min(arm_depth, key=arm_depth.get)
    side_view = abs(s) > 0.35
    if side_view:
        _draw_arm(cv, sk, b, o, far_arm, 0.82)
    # Legs, far one first.
    leg_depth = {sd: cv.depth(sk.knees[sd]) + 0.3 * cv.depth(sk.hips[sd]) for sd in (1, -1)}
    for sd in sorted(leg_depth, key=leg_depth.get):
        _draw_leg(cv, sk, b, o, sd, 0.85 if (side_view and leg_depth[sd] < max(leg_depth.values())) else 1.0)
    _draw_torso_garments(cv, sk, b, o)
    if long_back and facing <= 0.3:
        _draw_back_hair(cv, sk, b, style)
    _draw_bag(cv, sk, b, bag_o, "front", bag_material)
    _draw_head(cv, sk, b, yaw, glasses=acc is not None and acc.glasses)
    for sd in (1, -1):
        if side_view and sd == far_arm:
            continue
        _draw_arm(cv, sk, b, o, sd, 1.0)

    mat = cv.mat
    col = _texture(mat, o, b, scale, ox, oy)
    if acc is not None:
        col[mat == M_GLASSES] = acc.glasses_rgb
        col[mat == M_OWN_BAG] = acc.bag_rgb
    # Shading: parts look rounded (darker near part boundaries), light from above.
    edge = np.zeros_like(mat, dtype=bool)
    edge[:, 1:] |= mat[:, 1:] != mat[:, :-1]
    edge[1:, :] |= mat[1:, :] != mat[:-1, :]
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)
    r0 = max(1.0, 0.03 * px_height * ss)
    rounding = 0.72 + 0.28 * np.sqrt(np.clip(dist / r0, 0.0, 1.0))
    grad = (1.08 - 0.22 * (np.arange(h, dtype=np.float32) / h))[:, None]
    rgb = np.clip(col * (cv.shade * rounding * grad)[..., None], 0.0, 1.0)
    fg = (mat > 0).astype(np.float32)
    rgb = rgb * fg[..., None]
    out_w, out_h = w // ss, h // ss
    rgb_s = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(fg, (out_w, out_h), interpolation=cv2.INTER_AREA)
    # Un-premultiply so that edge pixels keep the person's colour.
    rgb_s = np.where(alpha[..., None] > 1e-3, rgb_s / np.maximum(alpha[..., None], 1e-3), 0.0).astype(np.float32)
    labels = coverage_labels(label_coverage(MATERIAL_TO_LABEL[mat], (out_w, out_h), cv2.INTER_AREA))
    foot = (ox / ss, oy / ss)
    return Sprite(rgb=np.clip(rgb_s, 0.0, 1.0), alpha=np.clip(alpha, 0.0, 1.0), labels=labels, foot=foot)
