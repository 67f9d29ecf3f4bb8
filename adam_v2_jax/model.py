"""The Adam-v2 networks of one run: backbone g, heads h_L, h_C, h_D, and their pure apply functions.

Student parameters are a dict {'backbone', 'head_l'} in stage L, plus {'head_c', 'head_d'} in stage
LCD; the teacher is {'backbone', 'head_l'} (SPEC 1: h_C and h_D exist only in the student).
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from adam_v2_jax.models import heads, registry

TEACHER_KEYS = ("backbone", "head_l")


def compute_dtype(name: str):
  """'auto' -> bfloat16 on GPU/TPU, float32 on CPU."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


@dataclasses.dataclass(frozen=True)
class Networks:
  """The modules of a run (stateless Flax modules; parameters live in the train state)."""
  backbone: nn.Module
  head_l: nn.Module
  head_c: nn.Module
  head_d: nn.Module
  dim: int
  n_parts: int
  # The same backbone without stochastic depth, for the teacher (DINO's teacher has none); drop
  # path has no parameters, so the student's parameter tree fits it.
  teacher_backbone: nn.Module

  def init_params(self, rng, mode: str, image_size: int):
    """Fresh parameters of the student for `mode` and the backbone's batch_stats.

    Returns (params, batch_stats) where batch_stats is {'backbone': ...} ({} without BatchNorm)."""
    k_b, k_l, k_c, k_d = jax.random.split(rng, 4)
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = self.backbone.init(k_b, x, train=False)
    feat = jnp.zeros((1, self.dim), jnp.float32)
    params = {"backbone": variables["params"],
              "head_l": self.head_l.init(k_l, feat)["params"]}
    if mode == "LCD":
      params.update(self.init_lcd_heads(k_c, k_d))
    stats = variables.get("batch_stats")
    return params, ({"backbone": stats} if stats is not None else {})

  def init_lcd_heads(self, k_c, k_d):
    """Fresh h_C and h_D parameters (the LCD stage starts them from scratch)."""
    feat = jnp.zeros((1, self.dim), jnp.float32)
    return {"head_c": self.head_c.init(k_c, jnp.zeros((1, self.n_parts * self.dim)))["params"],
            "head_d": self.head_d.init(k_d, feat)["params"]}

  def features(self, params, batch_stats, x, *, train=True, rng=None, teacher=False):
    """g(x): [N,H,W,3] -> (float32[N,D], new batch_stats). BatchNorm uses batch statistics when
    training (the teacher too, as in the released code) and updates the running ones.
    teacher=True runs the backbone without stochastic depth (no rng needed)."""
    net = self.teacher_backbone if teacher else self.backbone
    variables = {"params": params["backbone"], **({"batch_stats": batch_stats["backbone"]}
                                                   if batch_stats else {})}
    rngs = {"dropout": rng} if rng is not None else None
    if batch_stats and train:
      feat, updates = net.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
      return feat, {"backbone": updates["batch_stats"]}
    return net.apply(variables, x, train=train, rngs=rngs), batch_stats

  def features_per_view(self, params, batch_stats, x, *, rng=None, teacher=False):
    """g of each view with its own BatchNorm statistics, as separate backbone calls would take.

    x: [B, V, H, W, 3] -> (float32[V, B, D], new batch_stats). Training mode; the running
    statistics move by the mean of the views' updates. rng: split per view (stochastic depth).
    """
    if not batch_stats:  # no BatchNorm: one call is the same computation
      feat, _ = self.features(params, batch_stats, flatten_views(x), rng=rng, teacher=teacher)
      return split_views(feat, x.shape[1]), batch_stats
    keys = None if rng is None else jax.random.split(rng, x.shape[1])
    feat, stats = jax.vmap(
        lambda v, k: self.features(params, batch_stats, v, rng=k, teacher=teacher),
        in_axes=(1, None if keys is None else 0))(x, keys)
    return feat, jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)

  def localizability(self, params, feat):
    """h_L: float32[N, D] -> float32[N, K] logits."""
    return self.head_l.apply({"params": params["head_l"]}, feat)

  def compose(self, params, part_feats):
    """h_C: float32[B, n*D] (parts concatenated row-major) -> float32[B, D]."""
    return self.head_c.apply({"params": params["head_c"]}, part_feats)

  def decompose(self, params, whole_feat):
    """h_D: float32[B, D] -> float32[B, n*D]; slice i is part i."""
    return self.head_d.apply({"params": params["head_d"]}, whole_feat)


def flatten_views(x):
  """[B, V, ...] -> [B*V, ...] (anchor-major, so the batch sharding stays in contiguous blocks)."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def split_views(feat, n_views):
  """[B*V, D] (anchor-major) -> [V, B, D]."""
  return feat.reshape(-1, n_views, feat.shape[-1]).transpose(1, 0, 2)


def build_networks(config) -> Networks:
  """The networks of config.model (backbone name, dtype, head sizes) and config.views.n_parts."""
  m = config.model
  dtype = compute_dtype(m.dtype)
  dim = registry.feature_dim(m.backbone)
  n = config.views.n_parts
  return Networks(
      backbone=registry.create_backbone(m.backbone, dtype=dtype, drop_path=m.drop_path),
      head_l=heads.DINOHead(m.out_dim, hidden_dim=m.head_hidden_dim,
                            bottleneck_dim=m.head_bottleneck_dim, batch_norm=m.get("head_bn", False),
                            dtype=dtype),
      head_c=heads.ComposeHead(dim, dtype=dtype),
      head_d=heads.DecomposeHead(dim, n, dtype=dtype),
      dim=dim, n_parts=n,
      teacher_backbone=registry.create_backbone(m.backbone, dtype=dtype, drop_path=0.0))


def teacher_of(params):
  """The student parameters the teacher mirrors (backbone and h_L)."""
  return {k: params[k] for k in TEACHER_KEYS}
