"""Procedural dashcam scenes: the seed's "black car in front of me" with a light nobody captions.

A scene (RGB, float32 in [0, 1], ``size x size``, default 32) has sky above a jittered horizon and
road below, a car ahead, a traffic light in the sky (upper part of the frame), optionally a
pedestrian at the roadside and clouds. Two independent random draws define a scene:

  * *attributes* (``sample_attributes``) - the labels, independent and uniform:
    ``car_color`` (black, red, blue, white), ``light`` (0 = red, 1 = green),
    ``pedestrian`` (0 / 1), ``clouds`` (0 / 1);
  * *nuisance* (``sample_nuisance``) - everything else: horizon, positions of every object, car
    size, lighting, sky tint, road grey and per-pixel noise, so no attribute is one fixed pixel.

``render_scenes(attrs, nuisance)`` is a pure function of both, so scenes that differ in exactly one
attribute under the same nuisance (``scene_pairs``) differ only inside that attribute's boxes
(``scene_layout``). The light is a housing with a ``lamp_size x lamp_size`` lit lamp (red on top,
green below; default 2x2 in a 4x6 housing, ``LAMP_SIZES`` allowed), so raw pixels do carry it.
Everything is numpy, seeded by a ``np.random.Generator``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

CAR_COLORS = ("black", "red", "blue", "white")
ATTRIBUTES = {
    "car_color": CAR_COLORS,
    "light": ("red", "green"),
    "pedestrian": ("absent", "present"),
    "clouds": ("clear", "cloudy"),
}
CAR_RGB = np.array([[0.05, 0.05, 0.06], [0.85, 0.08, 0.08], [0.10, 0.20, 0.85],
                    [0.96, 0.96, 0.96]], np.float32)
LAMP_RGB = np.array([[1.0, 0.12, 0.10], [0.15, 1.0, 0.25]], np.float32)
SKY_RGB = np.array([0.45, 0.65, 0.95], np.float32)
CLOUD_RGB = np.array([0.93, 0.94, 0.96], np.float32)
HOUSING_RGB = np.array([0.12, 0.12, 0.12], np.float32)
POLE_RGB = np.array([0.30, 0.30, 0.30], np.float32)
WINDOW_RGB = np.array([0.55, 0.70, 0.80], np.float32)
WHEEL_RGB = np.array([0.02, 0.02, 0.02], np.float32)
SKIN_RGB = np.array([0.90, 0.70, 0.55], np.float32)
SHIRT_RGB = np.array([[0.95, 0.80, 0.10], [0.55, 0.20, 0.60], [0.20, 0.65, 0.30]], np.float32)
NUM_CLOUDS = 2
LAMP_SIZES = (2, 3, 4, 5, 6)      # a lamp side (px) the generator can draw at size 32 and above
PEDESTRIAN_HW = (6, 2)
NOISE_STD = 0.02
MIN_SIZE = 32


def _check_n(n) -> int:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n={n!r} is invalid; allowed: an int >= 1")
  return int(n)


def _check_rng(rng) -> np.random.Generator:
  if not isinstance(rng, np.random.Generator):
    raise ValueError(f"rng={rng!r} is invalid; allowed: a numpy Generator (np.random.default_rng)")
  return rng


def _check_size(size) -> int:
  if (isinstance(size, bool) or not isinstance(size, (int, np.integer))
      or not MIN_SIZE <= size <= 256):
    raise ValueError(f"size={size!r} is invalid; allowed: an int in [{MIN_SIZE}, 256]")
  return int(size)


def _check_lamp(lamp_size) -> int:
  if isinstance(lamp_size, bool) or lamp_size not in LAMP_SIZES:
    raise ValueError(f"lamp_size={lamp_size!r} is invalid; allowed: one of "
                     f"{', '.join(map(str, LAMP_SIZES))}")
  return int(lamp_size)


def housing_hw(lamp_size: int) -> tuple[int, int]:
  """The light housing's (height, width): two lamps stacked, a one-pixel rim."""
  return 2 * lamp_size + 2, lamp_size + 2


def sample_attributes(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Independent uniform attributes, int32 (n,) each, keyed as ``ATTRIBUTES``."""
  n, rng = _check_n(n), _check_rng(rng)
  return {name: rng.integers(0, len(values), size=n).astype(np.int32)
          for name, values in ATTRIBUTES.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Nuisance:
  """Per-scene nuisance draws (arrays with leading dim N); ``size`` is the image side."""

  size: int
  horizon: np.ndarray      # (N,) first road row
  car_x: np.ndarray        # (N,) car centre column
  car_bottom: np.ndarray   # (N,) one past the car's last row
  car_width: np.ndarray    # (N,)
  light_yx: np.ndarray     # (N, 2) housing top-left
  ped_x: np.ndarray        # (N,) pedestrian left column (left or right roadside)
  ped_bottom: np.ndarray   # (N,) one past the pedestrian's last row
  shirt: np.ndarray        # (N,) index into SHIRT_RGB
  cloud_yx: np.ndarray     # (N, NUM_CLOUDS, 2) cloud top-left
  brightness: np.ndarray   # (N,) global lighting factor
  sky_tint: np.ndarray     # (N, 3)
  road_grey: np.ndarray    # (N,)
  noise_seed: np.ndarray   # (N,) uint32 seed of the per-pixel noise
  lamp_size: int = 2       # side of the lit lamp (px)

  def __len__(self) -> int:
    return len(self.horizon)

  def take(self, index) -> "Nuisance":
    """The nuisance of a subset of scenes (numpy index)."""
    fields = {f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)
              if f.name not in ("size", "lamp_size")}
    return Nuisance(size=self.size, lamp_size=self.lamp_size, **fields)


def sample_nuisance(n: int, rng: np.random.Generator, size: int = 32, lamp_size: int = 2
                    ) -> Nuisance:
  """Uniform nuisance draws for n scenes of ``size x size`` pixels with lamps of ``lamp_size``.

  The housing's top row is uniform in [1, horizon - height - 2] (it ends at least 2 rows above the
  horizon), or row 1 where a large lamp's housing does not fit (lamp 6 at size 32: the housing may
  then reach the horizon, but both lamps stay in the sky)."""
  n, rng, s, lamp = _check_n(n), _check_rng(rng), _check_size(size), _check_lamp(lamp_size)
  housing_h, housing_w = housing_hw(lamp)

  def i(lo, hi, shape=(n,)):  # uniform ints in [lo, hi], inclusive
    return rng.integers(lo, hi + 1, size=shape).astype(np.int32)

  horizon = s // 2 + i(-2, 1)
  car_width = round(0.34 * s) + i(-1, 1)
  car_x = s // 2 + i(-(s // 8), s // 8)
  car_bottom = np.minimum(horizon + round(0.25 * s) + i(0, 3), s - 1)   # whole car on the road
  light_y = rng.integers(1, np.maximum(horizon - housing_h - 1, 2))
  light_yx = np.stack([light_y, i(1, s - housing_w - 1)], axis=1).astype(np.int32)
  left = rng.integers(0, 2, size=n).astype(bool)
  ped_x = np.where(left, i(0, 3), i(s - 5, s - PEDESTRIAN_HW[1]))
  ped_bottom = rng.integers(horizon + PEDESTRIAN_HW[0], s + 1)   # feet on the road
  cloud_yx = np.stack([rng.integers(0, (horizon - 5)[:, None], size=(n, NUM_CLOUDS)),
                       i(0, s - 8, (n, NUM_CLOUDS))], axis=2).astype(np.int32)
  return Nuisance(
      size=s, horizon=horizon, car_x=car_x, car_bottom=car_bottom, car_width=car_width,
      light_yx=light_yx, ped_x=ped_x.astype(np.int32), ped_bottom=ped_bottom.astype(np.int32),
      shirt=i(0, len(SHIRT_RGB) - 1), cloud_yx=cloud_yx,
      brightness=rng.uniform(0.7, 1.1, size=n).astype(np.float32),
      sky_tint=rng.uniform(-0.06, 0.06, size=(n, 3)).astype(np.float32),
      road_grey=rng.uniform(0.30, 0.45, size=n).astype(np.float32),
      noise_seed=rng.integers(0, 2**32, size=n, dtype=np.uint32), lamp_size=lamp)


def scene_layout(nuisance: Nuisance) -> dict[str, np.ndarray]:
  """Boxes (N, 4) as half-open ``(y0, y1, x0, x1)`` of every object, from the nuisance alone.

  Keys: ``car``, ``cabin``, ``window``, ``body``, ``wheel_l``, ``wheel_r``, ``light`` (housing),
  ``lamp_red``, ``lamp_green``, ``pole``, ``pedestrian``, ``head``, ``legs``, ``cloud{k}_a``,
  ``cloud{k}_b`` (two rectangles per cloud), ``cloud{k}`` (their bounding box).
  """
  nu = nuisance

  def box(y0, y1, x0, x1):
    return np.stack(np.broadcast_arrays(y0, y1, x0, x1), 1).astype(np.int32)

  x0 = nu.car_x - nu.car_width // 2
  x1 = x0 + nu.car_width
  body_h = np.maximum(3, nu.car_width // 3)
  wheel_y = nu.car_bottom - 1
  body_y0 = wheel_y - body_h
  cabin_y0 = body_y0 - 3
  ly, lx = nu.light_yx[:, 0], nu.light_yx[:, 1]
  lamp, (housing_h, housing_w) = nu.lamp_size, housing_hw(nu.lamp_size)
  px, pb = nu.ped_x, nu.ped_bottom
  boxes = {
      "car": box(cabin_y0, nu.car_bottom, x0, x1),
      "body": box(body_y0, wheel_y, x0, x1),
      "cabin": box(cabin_y0, body_y0, x0 + 2, x1 - 2),
      "window": box(cabin_y0 + 1, body_y0, x0 + 3, x1 - 3),
      "wheel_l": box(wheel_y, nu.car_bottom, x0 + 1, x0 + 3),
      "wheel_r": box(wheel_y, nu.car_bottom, x1 - 3, x1 - 1),
      "light": box(ly, ly + housing_h, lx, lx + housing_w),
      "lamp_red": box(ly + 1, ly + 1 + lamp, lx + 1, lx + 1 + lamp),
      "lamp_green": box(ly + 1 + lamp, ly + 1 + 2 * lamp, lx + 1, lx + 1 + lamp),
      "pole": box(ly + housing_h, np.maximum(nu.horizon, ly + housing_h), lx + 1, lx + 2),
      "pedestrian": box(pb - PEDESTRIAN_HW[0], pb, px, px + PEDESTRIAN_HW[1]),
      "head": box(pb - 6, pb - 4, px, px + 2),
      "legs": box(pb - 1, pb, px, px + 2),
  }
  for k in range(NUM_CLOUDS):
    cy, cx = nu.cloud_yx[:, k, 0], nu.cloud_yx[:, k, 1]
    boxes[f"cloud{k}_a"] = box(cy + 2, cy + 4, cx, cx + 8)
    boxes[f"cloud{k}_b"] = box(cy, cy + 2, cx + 2, cx + 6)
    boxes[f"cloud{k}"] = box(cy, cy + 4, cx, cx + 8)
  return boxes


def attribute_boxes(attribute: str, nuisance: Nuisance) -> list[np.ndarray]:
  """The boxes (each (N, 4)) outside which changing ``attribute`` cannot change a pixel."""
  if attribute not in ATTRIBUTES:
    raise ValueError(f"attribute={attribute!r} is unknown; allowed: {', '.join(ATTRIBUTES)}")
  layout = scene_layout(nuisance)
  names = {"car_color": ["car"], "light": ["light"], "pedestrian": ["pedestrian"],
           "clouds": [f"cloud{k}" for k in range(NUM_CLOUDS)]}[attribute]
  return [layout[name] for name in names]


def _fill(image_NHW3, box_N4, rgb, where_N=None):
  """Paint ``rgb`` ((3,) or (N, 3)) into each scene's box, only where ``where_N`` is true."""
  n = image_NHW3.shape[0]
  y0, y1, x0, x1 = box_N4.T
  hmax, wmax = max(int((y1 - y0).max()), 0), max(int((x1 - x0).max()), 0)
  rows = y0[:, None, None] + np.arange(hmax)[None, :, None]          # (N, hmax, 1)
  cols = x0[:, None, None] + np.arange(wmax)[None, None, :]          # (N, 1, wmax)
  valid = (rows < y1[:, None, None]) & (cols < x1[:, None, None])    # (N, hmax, wmax)
  if where_N is not None:
    valid &= np.asarray(where_N, bool)[:, None, None]
  idx, r, c = np.nonzero(valid)
  rgb = np.broadcast_to(np.asarray(rgb, np.float32), (n, 3))
  image_NHW3[idx, rows[idx, r, 0], cols[idx, 0, c]] = rgb[idx]


def _hash32(x):
  """lowbias32 integer hash (uint32 -> uint32), vectorised."""
  x = np.asarray(x, np.uint32)
  x = (x ^ (x >> np.uint32(16))) * np.uint32(0x7FEB352D)
  x = (x ^ (x >> np.uint32(15))) * np.uint32(0x846CA68B)
  return x ^ (x >> np.uint32(16))


def pixel_noise(noise_seed_N, size: int) -> np.ndarray:
  """Per-scene uniform noise (N, size, size, 3) with std NOISE_STD, a pure function of each seed."""
  pixel = np.arange(size * size * 3, dtype=np.uint32).reshape(1, size, size, 3)
  bits = _hash32(_hash32(noise_seed_N)[:, None, None, None] + pixel)
  unit = bits.astype(np.float32) * np.float32(2.0**-32) - np.float32(0.5)
  return unit * np.float32(NOISE_STD * np.sqrt(12.0))


def _check_attrs(attrs, n: int) -> dict[str, np.ndarray]:
  if not isinstance(attrs, dict) or not set(ATTRIBUTES) <= set(attrs):
    keys = sorted(attrs) if isinstance(attrs, dict) else type(attrs).__name__
    raise ValueError(f"attrs has keys {keys}; allowed: a dict with keys {', '.join(ATTRIBUTES)}")
  out = {}
  for name, values in ATTRIBUTES.items():
    a = np.asarray(attrs[name])
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer) or a.min() < 0 \
        or a.max() >= len(values):
      raise ValueError(f"attrs[{name!r}] must be ints in [0, {len(values)}) of shape ({n},) like "
                       f"the nuisance, got shape {a.shape} dtype {a.dtype}")
    out[name] = a
  return out


def render_scenes(attrs: dict[str, np.ndarray], nuisance: Nuisance) -> np.ndarray:
  """Scenes (N, S, S, 3) float32 in [0, 1]; a pure function of attributes and nuisance."""
  n, s = len(nuisance), nuisance.size
  a = _check_attrs(attrs, n)
  lay = scene_layout(nuisance)
  rows = np.arange(s)[None, :, None, None]
  road = np.broadcast_to(nuisance.road_grey[:, None], (n, 3))
  img = np.where(rows < nuisance.horizon[:, None, None, None],
                 (SKY_RGB + nuisance.sky_tint)[:, None, None, :],
                 road[:, None, None, :]).astype(np.float32)
  img = np.ascontiguousarray(np.broadcast_to(img, (n, s, s, 3)))
  for k in range(NUM_CLOUDS):
    for part in "ab":
      _fill(img, lay[f"cloud{k}_{part}"], CLOUD_RGB, a["clouds"] == 1)
  _fill(img, lay["pole"], POLE_RGB)
  _fill(img, lay["light"], HOUSING_RGB)
  _fill(img, lay["lamp_red"], LAMP_RGB[0], a["light"] == 0)
  _fill(img, lay["lamp_green"], LAMP_RGB[1], a["light"] == 1)
  car_rgb = CAR_RGB[a["car_color"]]
  _fill(img, lay["cabin"], car_rgb)
  _fill(img, lay["window"], WINDOW_RGB)
  _fill(img, lay["body"], car_rgb)
  _fill(img, lay["wheel_l"], WHEEL_RGB)
  _fill(img, lay["wheel_r"], WHEEL_RGB)
  ped = a["pedestrian"] == 1
  _fill(img, lay["pedestrian"], SHIRT_RGB[nuisance.shirt], ped)
  _fill(img, lay["head"], SKIN_RGB, ped)
  _fill(img, lay["legs"], WHEEL_RGB, ped)
  noise = pixel_noise(nuisance.noise_seed, s)
  return np.clip(img * nuisance.brightness[:, None, None, None] + noise, 0.0, 1.0)


def make_scenes(n: int, rng: np.random.Generator, size: int = 32, lamp_size: int = 2
                ) -> tuple[np.ndarray, dict[str, np.ndarray], Nuisance]:
  """n scenes: (images (n, size, size, 3), attrs, nuisance); attributes drawn before nuisance."""
  n, rng, size = _check_n(n), _check_rng(rng), _check_size(size)
  attrs = sample_attributes(n, rng)
  nuisance = sample_nuisance(n, rng, size, lamp_size)
  return render_scenes(attrs, nuisance), attrs, nuisance


def with_attribute(attrs: dict[str, np.ndarray], attribute: str, values) -> dict[str, np.ndarray]:
  """A copy of ``attrs`` with one attribute replaced (broadcast to N)."""
  if attribute not in ATTRIBUTES:
    raise ValueError(f"attribute={attribute!r} is unknown; allowed: {', '.join(ATTRIBUTES)}")
  out = {k: np.array(v) for k, v in attrs.items()}
  out[attribute] = np.broadcast_to(np.asarray(values, np.int32), out[attribute].shape).copy()
  return out


def scene_pairs(n: int, attribute: str, rng: np.random.Generator, size: int = 32,
                lamp_size: int = 2):
  """Pairs of scenes that differ in exactly ``attribute``, with the same nuisance draw.

  The second scene's attribute is uniform over the *other* values. Returns
  (images_a, images_b, attrs_a, attrs_b, nuisance).
  """
  if attribute not in ATTRIBUTES:
    raise ValueError(f"attribute={attribute!r} is unknown; allowed: {', '.join(ATTRIBUTES)}")
  n, rng, size = _check_n(n), _check_rng(rng), _check_size(size)
  attrs_a = sample_attributes(n, rng)
  nuisance = sample_nuisance(n, rng, size, lamp_size)
  k = len(ATTRIBUTES[attribute])
  other = (attrs_a[attribute] + rng.integers(1, k, size=n)) % k
  attrs_b = with_attribute(attrs_a, attribute, other)
  return (render_scenes(attrs_a, nuisance), render_scenes(attrs_b, nuisance), attrs_a, attrs_b,
          nuisance)
