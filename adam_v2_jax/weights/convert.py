"""Flax variables <-> PyTorch state_dicts (timm layout; torchvision layout for ResNet-50).

All functions work on in-memory arrays: numpy in, numpy out (torch tensors are accepted on the way
in). Files: `save_state_dict` / `read_state_dict` (.safetensors or .pth) and `load_init`, which
config.model.init_from uses.
"""
import os
from typing import Any, Dict, Mapping, Optional

import numpy as np

from adam_v2_jax.models import registry
from adam_v2_jax.weights import torch_names
from adam_v2_jax.weights.torch_names import Entry

LAYOUTS = ("timm", "torchvision")
# Wrappers that training scripts put around a backbone's keys (DDP, DINO's MultiCropWrapper,
# the released Adam-v2 checkpoints, smp encoders): stripped on import.
_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
_CONTAINERS = ("teacher", "state_dict", "model", "student")


def _to_torch(kind: str, a: np.ndarray) -> np.ndarray:
  if kind == "conv":
    return np.ascontiguousarray(np.transpose(a, (3, 2, 0, 1)))
  if kind == "linear":
    return np.ascontiguousarray(a.T)
  return np.ascontiguousarray(a)


def _from_torch(kind: str, a: np.ndarray) -> np.ndarray:
  if kind == "conv":
    return np.ascontiguousarray(np.transpose(a, (2, 3, 1, 0)))
  if kind == "linear":
    return np.ascontiguousarray(a.T)
  return np.ascontiguousarray(a)


def _get(tree: Mapping, entry: Entry):
  node = tree[entry.collection]
  for k in entry.path:
    node = node[k]
  return node


def _set(tree: Dict, entry: Entry, value) -> None:
  node = tree.setdefault(entry.collection, {})
  for k in entry.path[:-1]:
    node = node.setdefault(k, {})
  node[entry.path[-1]] = value


def _numpy(x) -> np.ndarray:
  if hasattr(x, "detach"):   # a torch tensor
    x = x.detach().cpu()
    if str(x.dtype) == "torch.bfloat16":
      x = x.float()
    x = x.numpy()
  return np.asarray(x)


def _check_layout(name: str, layout: str) -> None:
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  if layout == "torchvision" and registry.family(name) != "resnet":
    raise ValueError(f"layout 'torchvision' exists for the ResNet family only, not {name!r}")


def to_torch_state_dict(name: str, variables: Mapping, layout: str = "timm"
                        ) -> Dict[str, np.ndarray]:
  """Backbone variables {'params', ['batch_stats']} -> {torch key: np.ndarray}.

  Floats come out float32 (whatever they were), num_batches_tracked int64 0. The result loads with
  strict=True into timm.create_model(*registry.timm_equivalent(name), num_classes=0); for ResNet,
  layout='torchvision' is the same key set, which torchvision.models.resnet50 (minus fc) and
  segmentation_models_pytorch's resnet50 encoder read.
  """
  _check_layout(name, layout)
  out = {}
  for e in torch_names.table(name):
    if e.kind == "count":
      out[e.key] = np.zeros((), np.int64)
      continue
    try:
      a = np.array(_get(variables, e), dtype=np.float32)  # a writable copy
    except KeyError as err:
      raise ValueError(f"{name}: variables lack {e.collection}/{'/'.join(e.path)} "
                       f"(for torch key {e.key})") from err
    out[e.key] = _to_torch(e.kind, a)
  return out


def expected_torch_shapes(name: str) -> Dict[str, tuple]:
  """{torch key: shape} that a state_dict for `name` must have (from the Flax shapes)."""
  import jax   # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp   # pylint: disable=g-import-not-at-top
  m = registry.create_backbone(name)
  shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                         train=False))
  out = {}
  for e in torch_names.table(name):
    if e.kind == "count":
      out[e.key] = ()
    else:
      out[e.key] = _to_torch(e.kind, np.empty(_get(shapes, e).shape, np.int8)).shape
  return out


def _unwrap(state_dict: Mapping) -> Dict[str, Any]:
  """Finds the backbone's tensors in a checkpoint dict (wrapper keys and prefixes removed)."""
  sd = dict(state_dict)
  for c in _CONTAINERS:   # {'teacher': {...}, 'epoch': ...} style checkpoints
    if c in sd and isinstance(sd[c], Mapping):
      sd = dict(sd[c])
      break
  changed = True
  while changed:
    changed = False
    for p in _PREFIXES:
      if any(k.startswith(p) for k in sd):
        # Keep only keys under the prefix when it marks the backbone among other parts.
        sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        changed = True
  return sd


def from_torch_state_dict(name: str, state_dict: Mapping, *, source: str = "state_dict",
                          drop_classifier: bool = True) -> Dict[str, Dict]:
  """{torch key: tensor/array} -> Flax variables {'params', ['batch_stats']} (float32 numpy).

  Accepts timm/torchvision layouts, the original ConvNeXt layout (facebookresearch/ConvNeXt and
  the released Adam-v2 ConvNeXt), wrapped checkpoints ('teacher'/'state_dict'/'model' entries,
  'module.'/'backbone.' prefixes) and an ImageNet classifier (dropped when drop_classifier).
  Raises ValueError naming `source` and listing missing, unexpected and mis-shaped keys.
  """
  sd = _unwrap(state_dict)
  if registry.family(name) == "convnext":
    sd = torch_names.convnext_from_fb_keys(sd)
  if drop_classifier:
    for k in torch_names.CLASSIFIER_KEYS[registry.family(name)]:
      sd.pop(k, None)
  table = torch_names.table(name)
  expected = expected_torch_shapes(name)
  known = {e.key for e in table}
  missing = [e.key for e in table if e.kind != "count" and e.key not in sd]
  unexpected = sorted(k for k in sd if k not in known)
  misshaped = [f"{k}: got {tuple(np.shape(sd[k]))}, expected {expected[k]}"
               for k in expected if k in sd and expected[k] != ()
               and tuple(np.shape(sd[k])) != expected[k]]
  if missing or unexpected or misshaped:
    timm_name, kwargs = registry.timm_equivalent(name)
    lines = [f"{source}: not a {name} state_dict (timm {timm_name} {kwargs or ''}):"]
    for title, keys in (("missing", missing), ("unexpected", unexpected),
                        ("mis-shaped", misshaped)):
      if keys:
        more = f" ... and {len(keys) - 20} more" if len(keys) > 20 else ""
        lines.append(f"  {len(keys)} {title} keys: {', '.join(keys[:20])}{more}")
    raise ValueError("\n".join(lines))
  variables: Dict[str, Dict] = {}
  for e in table:
    if e.kind != "count":
      _set(variables, e, _from_torch(e.kind, _numpy(sd[e.key]).astype(np.float32)))
  return variables


# ---------------------------------------------------------------------------------------------
# Heads (released Adam-v2 layout).

def heads_to_torch(dino: Mapping, compose: Optional[Mapping] = None,
                   decompose: Optional[Mapping] = None) -> Dict[str, np.ndarray]:
  """Head params (each a DINOHead / ComposeHead / DecomposeHead 'params' dict) -> torch keys
  head.*, compose_head.*, decompose_head.* (see torch_names.heads_table)."""
  tree = {"params": {"dino": dino}}
  if compose is not None:
    tree["params"]["compose"] = compose
  if decompose is not None:
    tree["params"]["decompose"] = decompose
  out = {}
  for e in torch_names.heads_table(compose is not None, decompose is not None):
    out[e.key] = _to_torch(e.kind, np.array(_get(tree, e), np.float32))
  v = out["head.last_layer.weight_v"]
  out["head.last_layer.weight_g"] = np.ones((v.shape[0], 1), np.float32)   # gain fixed at 1
  return out


# ---------------------------------------------------------------------------------------------
# Files.

def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes .safetensors (no torch needed) or .pth (torch.save of tensors)."""
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file   # pylint: disable=g-import-not-at-top
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, path)
  elif path.endswith((".pth", ".pt")):
    import torch   # pylint: disable=g-import-not-at-top
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, path)
  else:
    raise ValueError(f"{path}: unknown weights format; use .safetensors or .pth")


def read_state_dict(path: str) -> Dict[str, Any]:
  """Reads .safetensors (numpy) or .pth/.pt/.bin (torch, weights_only) into a dict."""
  if not os.path.exists(path):
    raise ValueError(f"{path}: no such weights file")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file   # pylint: disable=g-import-not-at-top
    load = load_file
  elif path.endswith((".pth", ".pt", ".bin", ".tar")):
    try:
      import torch   # pylint: disable=g-import-not-at-top
    except ImportError as err:
      raise ValueError(f"{path}: reading .pth needs torch (pip install -e '.[torch]'), or "
                       "convert it to .safetensors") from err
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)
  else:
    raise ValueError(f"{path}: unknown weights format; use .safetensors or .pth")
  try:
    sd = load(path)
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [""])[0]   # torch's messages run for a page
    raise ValueError(
        f"{path}: cannot read the weights ({type(e).__name__}: {first}). A file that pickles "
        "objects (a whole model, or DINO-style checkpoints that save their args) is refused by "
        "torch.load(weights_only=True): load it in torch and save its state_dict()") from e
  if not isinstance(sd, Mapping):
    raise ValueError(f"{path}: holds a {type(sd).__name__}, not a state_dict (a mapping of "
                     "tensor names to tensors); save model.state_dict()")
  return sd


def load_init(name: str, path: str) -> Dict[str, Dict]:
  """config.model.init_from: a timm/torchvision state_dict file -> backbone variables for `name`.

  Returns {'params': ..., ['batch_stats': ...]} of float32 numpy arrays; raises ValueError
  naming the file and the missing / unexpected / mis-shaped keys.
  """
  return from_torch_state_dict(name, read_state_dict(path), source=path)
