"""A procedural chest radiograph (PA view): the demo's data, the zero-shot analyses' ground truth.

Each "patient" (seed, index) draws its anatomy (body outline, lungs with vessel markings, heart,
aortic knob, spine, posterior and anterior ribs, clavicles, humeral heads, diaphragm domes with a
gastric bubble, trachea and main bronchi) and its exposure, contrast and noise from numpy
Generators seeded with those integers. Nothing is cached, so spawned grain workers see the same
patients. Anatomy lives in normalised coordinates (x, y in [0, 1], y down): a patient is the same
body at every resolution and only the pixel noise depends on the size.

The image is an attenuation map (soft-tissue thickness + bone - air) passed through 1 - exp(-k A),
as film responds to exposure: bones bright, lungs dark, soft tissue grey, smooth gradients, then
quantum noise. Above 256 px the smooth anatomy is computed at half resolution and upsampled
(linear, exact pixel centres) before full-resolution noise: the speed of the demo's pipeline.
Sides follow the radiological convention: the patient's right is on the image's left.
"""
import dataclasses
import math

import numpy as np

from adam_v2_jax.data import records

LANDMARKS = (
    "carina",
    "right_lung_apex",
    "left_lung_apex",
    "right_costophrenic_angle",
    "left_costophrenic_angle",
    "heart_apex",
    "aortic_knob",
    "right_clavicle_head",
    "left_clavicle_head",
    "right_hemidiaphragm",      # top of the right diaphragm dome
)
MASKS = ("right_lung", "left_lung", "heart", "right_clavicle", "left_clavicle")
_SIDES = ((-1, "right"), (1, "left"))   # -1: the image's left half, the patient's right
_F = np.float32


@dataclasses.dataclass(frozen=True)
class PhantomCase:
  """One phantom radiograph.

  Attributes:
    image: uint8[H, W] grey radiograph.
    landmarks: {name in LANDMARKS: (x, y)} floats in pixels (x right, y down, pixel centres at
      integers).
    masks: {name in MASKS: bool[H, W]}. Lungs exclude the heart and the aortic knob (as the
      JSRT/SCR masks do) and include what the clavicles and ribs overlap.
  """
  image: np.ndarray
  landmarks: dict
  masks: dict


def _size(size) -> tuple[int, int]:
  h, w = (size, size) if np.isscalar(size) else tuple(size)
  if int(h) < 16 or int(w) < 16:
    raise ValueError(f"phantom size must be at least 16 px, got {size!r}")
  return int(h), int(w)


def _smooth(t):
  t = np.clip(t, 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


class _Grid:
  """Pixel centres in normalised units: a column y[H, 1] and a row x[1, W].

  `step` is how many output pixels one grid pixel spans (1 or 2); the grid's pixel centres are
  the centres of those blocks, so a linear 2x upsampling lands on the output's pixel centres.
  """

  def __init__(self, h: int, w: int, step: int):
    self.h, self.w = -(-h // step), -(-w // step)
    self.y = ((np.arange(self.h, dtype=_F) + 0.5) * (step / h))[:, None]
    self.x = ((np.arange(self.w, dtype=_F) + 0.5) * (step / w))[None, :]
    self.px = step / min(h, w)    # one grid pixel in normalised units (soft edges)
    self.sy, self.sx = step / h, step / w

  def box(self, x0, x1, y0, y1):
    """Slices of the grid pixels near [x0, x1] x [y0, y1] and their coordinates."""
    r0 = min(max(math.floor(y0 / self.sy) - 2, 0), self.h)
    r1 = min(max(math.ceil(y1 / self.sy) + 2, r0), self.h)
    c0 = min(max(math.floor(x0 / self.sx) - 2, 0), self.w)
    c1 = min(max(math.ceil(x1 / self.sx) + 2, c0), self.w)
    return (slice(r0, r1), slice(c0, c1)), self.y[r0:r1], self.x[:, c0:c1]

  def soft(self, margin):
    """Coverage of a pixel by a region at signed distance `margin` (normalised units)."""
    return np.clip(margin * (1.0 / self.px) + 0.5, 0.0, 1.0)


class _Uniforms:
  """u(lo, hi) draws from one pre-drawn block of uniforms (one Generator call per patient)."""

  def __init__(self, rng: np.random.Generator, n: int = 128):
    self.values, self.i = rng.random(n).tolist(), 0

  def __call__(self, lo=0.0, hi=1.0, n=None):
    if n is not None:
      return np.array([self(lo, hi) for _ in range(n)])
    v, self.i = self.values[self.i], self.i + 1
    return lo + (hi - lo) * v


def _draw_anatomy(rng: np.random.Generator) -> dict:
  """Every shape and exposure parameter of one patient (normalised coordinates)."""
  u = _Uniforms(rng)
  s = u(0.92, 1.06)                                 # body size
  top = u(-0.025, 0.035)                            # how high the patient stands in the field
  p = dict(cx=0.5 + u(-0.02, 0.02), shoulder_y=0.13 + top, neck_hw=u(0.07, 0.09) * s,
           chest_hw=u(0.41, 0.47) * s, waist=u(0.0, 0.04), body_k=u(0.9, 1.1))
  for _, name in _SIDES:
    p[name] = dict(
        med=u(0.065, 0.085) * s,                    # mediastinal border from the midline
        lat=u(0.32, 0.38) * s,                      # costophrenic angle from the midline
        apex_y=p["shoulder_y"] + u(0.0, 0.035),
        cp_y=u(0.69, 0.76) + top + (u(0.01, 0.04) if name == "left" else 0.0),
        dome=u(0.07, 0.11),                         # dome height above the CP angle
        uc=u(0.35, 0.5),                            # dome top: 0 medial .. 1 lateral
        va=u(0.22, 0.32),                           # height fraction of the rounded apex
        ua=u(0.3, 0.45),                            # apex position: 0 medial .. 1 lateral
        air=u(0.7, 0.85),
        vessels=(u(0, 2 * np.pi, 5), np.floor(u(9, 30, 5)), u(0.4, 1.0, 5)))
  p["apex_dx"] = u(0.15, 0.19) * s                  # heart apex from the midline
  p["heart_a"] = u(0.15, 0.18) * s                  # heart ellipse semi-axes
  p["heart_b"] = u(0.11, 0.13) * s
  p["heart_tilt"] = math.radians(u(25, 40))         # long axis, down towards the patient's left
  p["heart_k"] = u(0.03, 0.08)
  p["knob"] = (p["left"]["med"] + u(-0.005, 0.01), p["left"]["apex_y"] + u(0.14, 0.19),
               u(0.025, 0.035) * s)
  p["carina_y"] = p["left"]["apex_y"] + u(0.17, 0.23)
  p["trachea_dx"] = u(-0.008, 0.008)
  p["trachea_hw"] = u(0.014, 0.02) * s
  p["bronchi"] = (math.radians(u(20, 35)), math.radians(u(35, 55)), u(0.05, 0.08))
  p["spine"] = (u(0.032, 0.04) * s, u(0.042, 0.052) * s, u(0, 1))   # half-width, period, phase
  # Posterior ribs: y = level - b1 d + b2 d^2 at d from the midline; anterior: down-medial.
  p["ribs_post"] = (u(0.4, 0.5), u(1.7, 2.2), p["shoulder_y"] + u(-0.005, 0.02),
                    u(0.042, 0.05) * s, u(0.03, 0.07), u(0.36, 0.44))
  p["ribs_ant"] = (u(0.35, 0.55), u(0.3, 0.8), p["shoulder_y"] + u(0.06, 0.1),
                   u(0.058, 0.07) * s, u(0.0, 0.04), u(0.45, 0.55))
  # Clavicles: (head d, head y, lateral d, lateral y, thickness, S amplitude).
  p["clav"] = [(u(0.025, 0.04), p["shoulder_y"] + u(0.06, 0.09), u(0.29, 0.34) * s,
                p["shoulder_y"] + u(0.0, 0.03), u(0.022, 0.028) * s, u(0.5, 1.2))
               for _ in _SIDES]
  p["humerus"] = (u(0.055, 0.07) * s, u(0.03, 0.06))
  p["bubble"] = (u() < 0.7, u(-0.04, 0.0), u(0.03, 0.05), u(0.4, 0.8))
  p["bone_k"] = u(0.5, 0.65)
  p["expo"] = u(1.1, 1.5)
  p["gamma"] = u(0.85, 1.2)
  p["level"] = (u(0.0, 0.05), u(0.88, 0.98))        # black and white points
  p["heel"] = (u(-0.08, 0.08), u(-0.08, 0.08))
  p["noise"] = u(0.006, 0.02)
  return p


# -- Lungs. In a lung's frame u runs 0 (mediastinum) .. 1 (lateral, the CP angle) and v runs
# 0 (apex height) .. 1 (CP angle height).

def _lung_frame(p, side):
  lung = p["right" if side < 0 else "left"]
  return lung, lung["cp_y"] - lung["apex_y"], lung["lat"] - lung["med"]


def _lung_shape(lung, hl, uu, vv):
  """(medial border, lateral border) as functions of v, and the base (dome) as a function of u."""
  ua, va = lung["ua"], lung["va"]
  # Both borders leave the apex vertically (a rounded dome); the medial one straightens along
  # the mediastinum below va, the lateral one bulges out down to the costophrenic angle.
  vc = np.clip(vv, 0.0, 1.0)
  u_med = ua * (1.0 - np.sqrt(1.0 - (1.0 - np.minimum(vc * (1.0 / va), 1.0)) ** 2))
  u_lat = ua + (1.0 - ua) * (1.0 - (1.0 - vc) ** 1.6) ** 0.7
  bump = 1.0 - ((uu - lung["uc"]) / (1.0 - lung["uc"])) ** 2
  v_bot = 1.0 - lung["dome"] / hl * np.clip(bump, 0.0, 1.0)
  return u_med, u_lat, v_bot


def _lung(g: _Grid, p, side):
  """Lung coverage (soft) and its air thickness, in the lung's box."""
  lung, hl, wl = _lung_frame(p, side)
  x_in, x_out = p["cx"] + side * lung["med"], p["cx"] + side * (lung["lat"] + 0.01)
  sl, yy, xx = g.box(min(x_in, x_out), max(x_in, x_out), lung["apex_y"], lung["cp_y"])
  uu = (xx - x_in) * (side / wl)
  vv = (yy - lung["apex_y"]) * (1.0 / hl)
  u_med, u_lat, v_bot = _lung_shape(lung, hl, uu, vv)
  margin = np.minimum(np.minimum((uu - u_med) * wl, (u_lat - uu) * wl), (v_bot - vv) * hl)
  cover = g.soft(margin)
  # Vessel markings: streaks fanning out of the hilum, a function of the direction from it
  # (dv / r, cheaper than arctan2) looked up in a table, fading with the distance r.
  du, dv = (uu - 0.08) * wl, (vv - 0.5) * hl
  r = np.sqrt(du * du + dv * dv) + 1e-6
  phases, freqs, amps = lung["vessels"]
  ang = np.linspace(-1.0, 1.0, 256)[:, None]
  table = (np.cos(freqs * ang + phases) @ amps / amps.sum()).clip(0.0, 1.0).astype(_F) ** 2
  streak = table[((dv / r + 1.0) * 127.5).astype(np.intp)]
  marks = streak * np.exp(-r * 9.0) + 0.5 * np.exp(-r * r * 500.0)
  depth = np.sqrt(np.clip(margin * 25.0, 0.0, 1.0))
  air = cover * (lung["air"] * (0.55 + 0.45 * depth)) * (1.0 - np.minimum(marks, 0.6))
  return sl, cover, air


def _lung_apex(lung, hl):
  """Topmost lung point in its frame."""
  vv = np.linspace(0.0, 0.2, 2001)
  u_med, u_lat, _ = _lung_shape(lung, hl, 0.5, vv)
  i = int(np.argmax(u_lat - u_med > 1e-3))
  return 0.5 * (u_med[i] + u_lat[i]), vv[i]


def _left_base_y(p, x):
  """Height of the left hemidiaphragm at x (normalised)."""
  lung, hl, wl = _lung_frame(p, 1)
  uu = np.clip((x - p["cx"] - lung["med"]) / wl, 0.0, 1.0)
  return lung["apex_y"] + _lung_shape(lung, hl, uu, 1.0)[2] * hl


def _heart_geometry(p):
  """(apex, centre, floor line): an ellipse ending at the apex on the left hemidiaphragm."""
  ax = p["cx"] + p["apex_dx"]
  ay = float(_left_base_y(p, ax)) - 0.004
  t = p["heart_tilt"]
  centre = (ax - p["heart_a"] * math.cos(t), ay - p["heart_a"] * math.sin(t))
  lr = p["right"]
  floor0 = (p["cx"] - lr["med"] - 0.05, lr["cp_y"] - 0.6 * lr["dome"])
  return (ax, ay), centre, (floor0, (ax, ay))


def _heart(g: _Grid, p):
  """Heart coverage (soft) and its thickness, in the heart's box."""
  (ax, ay), (hx, hy), ((fx0, fy0), (fx1, fy1)) = _heart_geometry(p)
  a, b, t = p["heart_a"], p["heart_b"], p["heart_tilt"]
  sl, yy, xx = g.box(hx - a, ax + 0.01, hy - a, ay + 0.05)
  dx, dy = xx - hx, yy - hy
  along = dx * math.cos(t) + dy * math.sin(t)
  across = dy * math.cos(t) - dx * math.sin(t)
  rho = np.sqrt((along * (1.0 / a)) ** 2 + (across * (1.0 / b)) ** 2)
  floor = fy0 + (fy1 - fy0) / (fx1 - fx0) * (xx - fx0) - yy
  cover = g.soft(np.minimum((1.0 - rho) * b, floor + 0.004))
  return sl, cover, cover * np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0))


def _landmarks(p) -> dict:
  """LANDMARKS in normalised coordinates."""
  cx, out = p["cx"], {}
  for side, name in _SIDES:
    lung, hl, wl = _lung_frame(p, side)
    ua, va = _lung_apex(lung, hl)
    out[f"{name}_lung_apex"] = (cx + side * (lung["med"] + ua * wl), lung["apex_y"] + va * hl)
    out[f"{name}_costophrenic_angle"] = (cx + side * lung["lat"], lung["cp_y"])
    d0, yh, _, _, th, _ = p["clav"][0 if side < 0 else 1]
    out[f"{name}_clavicle_head"] = (cx + side * (d0 + 0.4 * th), yh)
  lr = p["right"]
  out["right_hemidiaphragm"] = (cx - (lr["med"] + lr["uc"] * (lr["lat"] - lr["med"])),
                                lr["cp_y"] - lr["dome"])
  out["carina"] = (cx + p["trachea_dx"], p["carina_y"])
  kx, ky, kr = p["knob"]
  out["aortic_knob"] = (cx + kx + kr, ky)
  out["heart_apex"] = _heart_geometry(p)[0]
  return {k: out[k] for k in LANDMARKS}


def _rib_table(g: _Grid, sp, grow, tf, n):
  """Rib profile as a function of the distance r >= 0 below the first rib's level.

  Rib k's top lies at r_k = sp (k + grow k^2 / 2) (spacing widening downwards) and it covers a
  fraction tf of its period, brighter at its cortex. Tabulated at 4 samples per grid pixel;
  entry 0 (r <= 0) and the entries after rib n are empty.
  """
  scale = 4.0 / g.px
  r = np.arange(int((sp * (n + grow * n * n / 2.0) + 2 * g.px) * scale) + 2) / scale
  phi = (np.sqrt(1.0 + (2.0 * grow / sp) * r) - 1.0) / grow
  frac = phi % 1.0
  edge = np.minimum(frac, tf - frac) * (sp * (1.0 + grow * phi))
  t = np.clip(frac * (2.0 / tf) - 1.0, -1.0, 1.0)
  table = g.soft(edge) * (0.55 + 0.45 * t ** 4) * (phi < n)
  table[0] = 0.0
  return table.astype(_F), scale


def _lookup(table, scale, r):
  """table[r * scale], r clipped into the table (entry 0 for r <= 0)."""
  return table[np.clip(r * scale + 1.0, 0.0, table.size - 1).astype(np.intp)]


def _ribs(g: _Grid, p, side, yy, xx, lung, hl):
  """Bone of one side's posterior and (fainter) anterior ribs over the box of (yy, xx)."""
  d = (xx - p["cx"]) * side
  vv = np.clip((yy - lung["apex_y"]) * (1.0 / hl), 0.0, 1.0)
  cage = lung["med"] + (lung["lat"] + 0.035 - lung["med"]) * np.sqrt(
      np.clip(vv / lung["va"] + 0.3, 0.0, 1.0))
  # Posterior ribs rise from the spine, then fall along the lateral chest wall.
  b1, b2, r0, sp, grow, tf = p["ribs_post"]
  table, scale = _rib_table(g, sp, grow, tf, 10)
  post = _lookup(table, scale, (yy - r0) + d * (b1 - b2 * d))
  post *= np.clip((d - 0.6 * p["spine"][0]) * 25.0, 0.0, 1.0)
  # Anterior ribs descend from the lateral wall towards the sternum, fading medially (cartilage).
  b1, b2, r0, sp, grow, tf = p["ribs_ant"]
  table, scale = _rib_table(g, sp, grow, tf, 6)
  e = np.maximum(lung["lat"] - d, 0.0)
  ant = _lookup(table, scale, (yy - r0 + 0.5 * b1 * lung["lat"]) - e * (b1 + b2 * e))
  ant *= np.clip((d - 0.12) * 12.0, 0.0, 0.3)
  return (post + ant) * np.clip((cage - d) * 40.0, 0.0, 1.0)


def _compose(g: _Grid, p, with_masks: bool):
  """The attenuation map on the grid, and the soft mask coverages (grid-sized) if asked."""
  cx, sy = p["cx"], p["shoulder_y"]
  cover = {}
  # Body: elliptic cross-section, its half-width growing from the neck to the shoulders.
  hw = p["neck_hw"] + (p["chest_hw"] - p["neck_hw"]) * _smooth((g.y - (sy - 0.07)) * (1 / 0.11))
  hw = hw - p["waist"] * np.clip((g.y - 0.8) * 5.0, 0.0, 1.0)
  q = np.abs(g.x - cx) * (1.0 / hw)
  atten = (p["body_k"] * g.soft((1.0 - q) * hw)) * np.sqrt(np.clip(1.02 - q * q, 0.0, 1.0))
  # Lungs; the heart and the aortic knob hide the air behind them.
  air = np.zeros_like(atten)
  for side, name in _SIDES:
    sl, c, a = _lung(g, p, side)
    air[sl] += a
    if with_masks:
      cover[name + "_lung"] = np.zeros_like(atten)
      cover[name + "_lung"][sl] = c
  hsl, heart, thick = _heart(g, p)
  air[hsl] *= 1.0 - 0.85 * heart
  atten[hsl] += p["heart_k"] * (heart + thick)
  kx, ky, kr = p["knob"]
  ksl, yy, xx = g.box(cx + kx - kr, cx + kx + kr, ky - kr, ky + kr)
  knob = g.soft(kr - np.sqrt((xx - cx - kx) ** 2 + (yy - ky) ** 2))
  air[ksl] *= 1.0 - knob
  atten[ksl] += 0.06 * knob
  if with_masks:
    cover["heart"] = np.zeros_like(atten)
    cover["heart"][hsl] = heart
    for name in ("right_lung", "left_lung"):
      cover[name][hsl] *= 1.0 - heart
      cover[name][ksl] *= 1.0 - knob
  atten -= air

  # Trachea and main bronchi: air columns over the mediastinum.
  tx, tw, ty = cx + p["trachea_dx"], p["trachea_hw"], p["carina_y"]
  ang_r, ang_l, blen = p["bronchi"]
  ends = [(side * blen * math.sin(a), blen * math.cos(a)) for side, a in ((-1, ang_r), (1, ang_l))]
  sl, yy, xx = g.box(tx + ends[0][0] - tw, tx + ends[1][0] + tw, 0.0, ty + blen + tw)
  q = (xx - tx) * (1.0 / tw)
  tube = 0.55 * np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0)) * g.soft(ty - yy)
  for vx, vy in ends:    # the union (max) of the three tubes: no double air at the carina
    s = np.clip(((xx - tx) * vx + (yy - ty) * vy) * (1.0 / (vx * vx + vy * vy)), 0.0, 1.0)
    dist2 = ((xx - tx - s * vx) ** 2 + (yy - ty - s * vy) ** 2) * (1.0 / (0.75 * tw) ** 2)
    tube = np.maximum(tube, 0.45 * np.sqrt(np.clip(1.0 - dist2, 0.0, 1.0)) * (1.0 - 0.6 * s))
  atten[sl] -= tube
  # Gastric bubble under the left hemidiaphragm, with a flat air-fluid level.
  has_bubble, bdx, brx, bk = p["bubble"]
  if has_bubble:
    bx = cx + p["apex_dx"] + bdx
    top, bry = float(_left_base_y(p, bx)) + 0.015, 0.6 * brx
    sl, yy, xx = g.box(bx - brx, bx + brx, top, top + 2 * bry)
    rho = np.sqrt(((xx - bx) * (1.0 / brx)) ** 2 + ((yy - top - bry) * (1.0 / bry)) ** 2)
    atten[sl] -= (bk * 0.45) * g.soft((1.0 - rho) * bry) * g.soft(top + 1.2 * bry - yy)

  bone = np.zeros_like(atten)
  # Spine: vertebral bodies between discs, the pedicles as bright rings.
  sw, per, phase = p["spine"]
  sl, yy, xx = g.box(cx - sw, cx + sw, 0.0, 1.0)
  q = (xx - cx) * (1.0 / sw)
  ph = (yy * (1.0 / per) + phase) % 1.0
  body = g.soft(np.minimum(ph, 0.8 - ph) * per) * np.clip(1.0 - q ** 4, 0.0, 1.0)
  ring = np.sqrt(((np.abs(q) - 0.6) * 5.0) ** 2 + ((ph - 0.35) * 4.5) ** 2) - 1.0
  bone[sl] += 0.35 * body + 0.18 * np.exp(-ring * ring * 8.0) * g.soft((1.0 - np.abs(q)) * sw)
  # Ribs, over the rib cage of each side.
  for side, name in _SIDES:
    lung, hl, _ = _lung_frame(p, side)
    x0, x1 = cx + side * 0.5 * sw, cx + side * (lung["lat"] + 0.04)
    sl, yy, xx = g.box(min(x0, x1), max(x0, x1), sy - 0.06, lung["cp_y"] + 0.1)
    bone[sl] += 0.6 * _ribs(g, p, side, yy, xx, lung, hl)
  # Clavicles: S-shaped bars from the sternal head up and out to the shoulder.
  for (side, name), (d0, yh, d1, yl, th, amp) in zip(_SIDES, p["clav"]):
    xa, xb = cx + side * d0, cx + side * d1
    sl, yy, xx = g.box(min(xa, xb), max(xa, xb), min(yh, yl) - 2 * th, max(yh, yl) + 2 * th)
    tt = ((xx - cx) * side - d0) * (1.0 / (d1 - d0))
    yc = yh + (yl - yh) * tt + (0.01 * amp) * np.sin((2 * np.pi) * tt)
    half = (0.5 * th) * (1.35 - 0.55 * np.clip(tt, 0.0, 1.0))
    # A capsule around the curve: rounded at both ends.
    beyond = (np.minimum(tt, 0.0) + np.maximum(tt - 1.0, 0.0)) * (d1 - d0)
    dist = np.sqrt((yy - yc) ** 2 + beyond * beyond)
    c = g.soft(half - dist)
    bone[sl] += c * (0.6 + 0.4 * np.clip(dist / half, 0.0, 1.0) ** 3)
    if with_masks:
      cover[name + "_clavicle"] = np.zeros_like(atten)
      cover[name + "_clavicle"][sl] = c
  # Humeral heads at the shoulders.
  hr, hdy = p["humerus"]
  for side, _ in _SIDES:
    hx, hy = cx + side * (p["chest_hw"] - 0.005), sy + hdy
    sl, yy, xx = g.box(hx - hr, hx + hr, hy - hr, hy + hr)
    rho = np.sqrt((xx - hx) ** 2 + (yy - hy) ** 2) * (1.0 / hr)
    bone[sl] += g.soft((1.0 - rho) * hr) * (0.55 + 0.45 * np.clip(rho, 0.0, 1.0) ** 4)
  atten += p["bone_k"] * bone
  return atten, cover


def _upsample2(a: np.ndarray, h: int, w: int) -> np.ndarray:
  """Linear 2x upsampling of a grid made with step 2, cropped to [h, w] (float32).

  Output pixel 2i (2i+1) is 3/4 of grid pixel i and 1/4 of its neighbour i-1 (i+1); stacking
  the two phases on a new last axis keeps the writes contiguous (4x faster than strided ones).
  """
  p = np.pad(a, 1, mode="edge")
  c = 0.75 * p[:, 1:-1]
  cols = np.stack([c + 0.25 * p[:, :-2], c + 0.25 * p[:, 2:]], axis=-1).reshape(p.shape[0], -1)
  r = 0.75 * cols[1:-1]
  out = np.stack([r + 0.25 * cols[:-2], r + 0.25 * cols[2:]], axis=1).reshape(-1, cols.shape[1])
  return out[:h, :w]


def _render(seed: int, index: int, h: int, w: int, with_masks: bool):
  """(image uint8[h, w], landmarks in pixels, masks bool[h, w]); the last two only if asked."""
  if seed < 0 or index < 0:
    raise ValueError(f"phantom seed and index must be non-negative, got {seed}, {index}")
  p = _draw_anatomy(np.random.default_rng([seed, index, 0]))
  step = 2 if min(h, w) > 256 else 1
  g = _Grid(h, w, step)
  atten, cover = _compose(g, p, with_masks)
  # Film response, window and gamma (a table over the attenuation); the heel effect.
  a = np.arange(4096) * (2.5 / 4095)
  film = np.clip((1.0 - np.exp(-p["expo"] * a)) / (1.0 - np.exp(-p["expo"] * 2.0)), 0.0, 1.0)
  lo, hi = p["level"]
  film = (lo + (hi - lo) * film ** p["gamma"]).astype(_F)
  img = film[np.clip(atten * (4095 / 2.5), 0.0, 4095.0).astype(np.intp)]
  img *= (1.0 + p["heel"][1] * (g.y - 0.5)) + p["heel"][0] * (g.x - 0.5)
  if step == 2:
    img = _upsample2(img, h, w)
    cover = {k: _upsample2(v, h, w) for k, v in cover.items()}
  # Uniform noise of standard deviation p["noise"], then 8 bits (in place: these are the
  # full-resolution passes).
  amp = p["noise"] * np.sqrt(12.0) * 255.0
  noise = np.random.default_rng([seed, index, 1]).random((h, w), dtype=_F)
  noise *= amp
  img *= 255.0
  img += noise
  img += 0.5 - 0.5 * amp
  image = np.clip(img, 0.0, 255.0, out=img).astype(np.uint8)
  if not with_masks:
    return image, None, None
  marks = {k: (float(x * w - 0.5), float(y * h - 0.5)) for k, (x, y) in _landmarks(p).items()}
  return image, marks, {k: v > 0.5 for k, v in cover.items()}


def phantom(seed: int, index: int, size=512) -> PhantomCase:
  """The phantom radiograph of patient `index` of family `seed`.

  Args:
    seed, index: non-negative ints; the same pair is the same patient at every size.
    size: int (square) or (height, width), at least 16 px.

  Returns:
    PhantomCase: image uint8[H, W], LANDMARKS as pixel (x, y), MASKS bool[H, W].
  """
  h, w = _size(size)
  image, landmarks, masks = _render(int(seed), int(index), h, w, with_masks=True)
  return PhantomCase(image=image, landmarks=landmarks, masks={k: masks[k] for k in MASKS})


class PhantomSource:
  """A grain RandomAccessDataSource of `count` phantom patients: Record(image uint8[H, W, 1],
  id 'phantom/<index>').

  Records are rendered on demand and nothing is cached, so the source pickles to spawned grain
  workers in a few bytes.
  """

  def __init__(self, seed: int = 0, count: int = 2048, size=512):
    if int(count) <= 0:
      raise ValueError(f"PhantomSource count must be positive, got {count}")
    if int(seed) < 0:
      raise ValueError(f"PhantomSource seed must be non-negative, got {seed}")
    self.seed, self.count, self.size = int(seed), int(count), _size(size)

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, index) -> records.Record:
    index = int(index)
    if not 0 <= index < self.count:
      raise IndexError(f"phantom index {index} out of range [0, {self.count})")
    image, _, _ = _render(self.seed, index, *self.size, with_masks=False)
    return records.Record(image=image[:, :, None], id=f"phantom/{index}")

  def __repr__(self) -> str:
    return f"PhantomSource(seed={self.seed}, count={self.count}, size={self.size})"
