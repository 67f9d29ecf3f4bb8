"""The views of one anchor: their order, sizes and roles, shared by the data pipeline and the step.

Pure Python (no numpy, no JAX), so that both the host pipeline (data/) and the device step may
import it. The host draws every view's random parameters in this order; the step renders the views
from the anchor canvas and routes them to teacher and student by these indices.

Batch contract (host -> step), per anchor, V = len(layout.sizes), S = config.data.canvas_size:
  canvas        uint8[S, S, C]   the anchor w in the top-left corner at its own resolution, a side
                                 longer than S shrunk to S; zeros elsewhere; C = 1 (grey,
                                 replicated to 3 on the device) or 3 (colour)
  extent        float32[2]       the anchor's height and width on the canvas, in fractions of S
                                 (optional for the renderer: absent means (1, 1))
  crop          float32[V, 4]    (top, left, height, width) of the view's crop box, in fractions
                                 of the anchor (continuous; 0..1)
  angle         float32[V]       rotation in degrees, counter-clockwise (PIL/torchvision sign)
  jitter        float32[V, 4]    brightness, contrast, saturation factors and hue shift;
                                 (1, 1, 1, 0) when jitter is not applied (the identity)
  jitter_order  int32[V, 4]      order in which the four jitter ops are applied (a permutation of
                                 0 brightness, 1 contrast, 2 saturation, 3 hue), as torchvision's
                                 ColorJitter draws it
  blur_sigma    float32[V]       Gaussian blur sigma in output pixels; 0 when not applied
  index         int32[]          global record index (for tests and debugging)
  skipped       int32[]          bad records skipped to produce this anchor (for the metric)
A batch stacks these along a leading batch axis.

Stage LCD (SPEC 3): view 0 is x0 (the whole anchor at global size), 1 is x1, 2..1+n_local the
local crops, then the n_parts parts (row-major 2x2 grid). Stage L: views 0 and 1 are the two
global crops, then the local crops.
"""
import dataclasses

MODES = ("L", "LCD")  # cheapest step first (metrics' ETA relies on the order)
PARAM_KEYS = ("crop", "angle", "jitter", "jitter_order", "blur_sigma")


@dataclasses.dataclass(frozen=True)
class ViewLayout:
  """Which view is which, for one stage mode.

  Attributes:
    mode: "L" or "LCD".
    sizes: output side of each view, in canonical order.
    teacher: views the teacher embeds through h_L (its localizability targets).
    student: views the student embeds through h_L, in the order of the loss.
    parts: LCD only: the part views (teacher targets of decomposability, student inputs of
      composability), row-major.
    whole: LCD only: index of x0 (teacher target of localizability and composability, student
      input of decomposability); None in stage L.
  """
  mode: str
  sizes: tuple[int, ...]
  teacher: tuple[int, ...]
  student: tuple[int, ...]
  parts: tuple[int, ...] = ()
  whole: int | None = None

  @property
  def num_views(self) -> int:
    return len(self.sizes)

  def groups(self) -> list[tuple[int, tuple[int, ...]]]:
    """Views grouped by output size, largest first: [(size, view indices), ...]."""
    by_size: dict[int, list[int]] = {}
    for i, s in enumerate(self.sizes):
      by_size.setdefault(s, []).append(i)
    return [(s, tuple(v)) for s, v in sorted(by_size.items(), key=lambda kv: -kv[0])]


def make_layout(mode: str, global_size: int = 224, local_size: int = 96, n_local: int = 8,
                n_parts: int = 4) -> ViewLayout:
  """The view layout of a stage mode ("L" or "LCD")."""
  if mode not in MODES:
    raise ValueError(f"stage mode must be one of {MODES}, got {mode!r}")
  local = tuple(range(2, 2 + n_local))
  if mode == "L":
    return ViewLayout(mode, (global_size,) * 2 + (local_size,) * n_local,
                      teacher=(0, 1), student=(0, 1) + local)
  parts = tuple(range(2 + n_local, 2 + n_local + n_parts))
  return ViewLayout(mode, (global_size,) * 2 + (local_size,) * n_local + (global_size,) * n_parts,
                    teacher=(0,), student=(1,) + local, parts=parts, whole=0)


def layout_from_config(config, mode: str) -> ViewLayout:
  """The layout of `mode` with the sizes and counts of `config.views`."""
  v = config.views
  return make_layout(mode, v.global_size, v.local_size, v.n_local, v.n_parts)
