"""Export a run's backbone (and optionally its heads) as a PyTorch state_dict.

  python -m adam_v2_jax.export --workdir=DIR --out=FILE [--model=teacher|student] [--step=N]
      [--layout=timm|torchvision] [--heads_out=FILE]

FILE ends in .safetensors or .pth. It loads with strict=True into
`timm.create_model(NAME, num_classes=0, **KWARGS)` (NAME, KWARGS in the JSON written beside FILE,
e.g. resnet50 / convnext_base / vit_small_patch16_224 with no kwargs); for ResNet-50,
--layout=torchvision is what torchvision.models.resnet50 (after `model.fc = nn.Identity()`) and
segmentation_models_pytorch's resnet50 encoder read. --heads_out writes the heads in the released
Adam-v2 PyTorch layout (head.*, compose_head.*, decompose_head.*).
"""
import datetime
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence

from absl import app, flags

import adam_v2_jax
from adam_v2_jax import cli
from adam_v2_jax import embed as embed_lib
from adam_v2_jax import weights
from adam_v2_jax.models import registry


def sidecar_path(out: str) -> str:
  """The JSON written beside a weights file: FILE without extension + '.json'."""
  return os.path.splitext(out)[0] + ".json"


def preprocessing(config=None) -> Dict[str, Any]:
  """The input convention of exported weights (what embed.py does)."""
  mean = tuple(config.views.mean) if config is not None else embed_lib.IMAGENET_MEAN
  std = tuple(config.views.std) if config is not None else embed_lib.IMAGENET_STD
  size = int(config.views.global_size) if config is not None else 224
  return {"input_size": size, "resize": "bicubic to input_size x input_size",
          "channels": "RGB order; grey images replicated to 3 channels",
          "scale": "pixels / 255 (8-bit)", "mean": list(mean), "std": list(std),
          "layout": "NCHW float32 in PyTorch (NHWC in adam_v2_jax)"}


def export_variables(name: str, variables: Mapping, out: str, *, layout: str = "timm",
                     heads: Optional[Mapping] = None, heads_out: str = "",
                     config=None, step: Optional[int] = None, model: str = "teacher"
                     ) -> Dict[str, Any]:
  """Writes backbone `variables` of registry model `name` to `out` and its JSON sidecar.

  heads: {'head_l': params, ['head_c': params, 'head_d': params]} as checkpoint.load_weights
  returns them; written to heads_out when given. Returns the sidecar's content.
  """
  if heads_out and config is not None and config.model.get("head_bn", False):
    # The released head layout (head.mlp.{0,2,4}) has no place for the batch standardisation
    # between the layers; a torch head built from it would compute something else.
    raise ValueError(f"{heads_out}: this run's DINO head batch-standardises its hidden layers "
                     "(model.head_bn=True), which the released head layout cannot hold; export "
                     "the backbone alone (without --heads_out)")
  sd = weights.to_torch_state_dict(name, variables, layout=layout)
  os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
  weights.save_state_dict(sd, out)
  timm_name, kwargs = registry.timm_equivalent(name)
  meta = {
      "format": os.path.splitext(out)[1].lstrip("."),
      "weights": os.path.basename(out),
      "architecture": {
          "backbone": name, "family": registry.family(name),
          "settings": registry.architecture(name),
          "feature_dim": registry.feature_dim(name), "layout": layout,
          "timm": {"model": timm_name, "kwargs": kwargs, "num_classes": 0},
          "torchvision": "resnet50 (fc replaced by nn.Identity)"
                         if layout == "torchvision" and name == "resnet50" else None,
          "feature": {"resnet": "global average pool",
                      "convnext": "global average pool, then head.norm",
                      "vit": "class token after the final norm"}[registry.family(name)],
      },
      "model": model, "step": step,
      "preprocessing": preprocessing(config),
      "num_tensors": len(sd),
      "config": json.loads(config.to_json_best_effort()) if config is not None else None,
      "adam_v2_jax_version": adam_v2_jax.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  if heads_out:
    if not heads or "head_l" not in heads:
      raise ValueError(f"{heads_out}: no heads to write (the checkpoint holds none)")
    hsd = weights.heads_to_torch(heads["head_l"], heads.get("head_c"), heads.get("head_d"))
    weights.save_state_dict(hsd, heads_out)
    meta["heads"] = {"weights": os.path.basename(heads_out),
                     "keys": "head.mlp.{0,2,4}, head.last_layer.weight_{g,v} (weight_norm, g=1)"
                             + (", compose_head.{0,2}" if "head_c" in heads else "")
                             + (", decompose_head.{0,2}" if "head_d" in heads else "")}
  with open(sidecar_path(out), "w") as f:
    json.dump(meta, f, indent=2, default=str)
  return meta


def _define_flags():
  flags.DEFINE_string("workdir", None, "Training run to export.")
  flags.DEFINE_string("out", None, "Output weights file (.safetensors or .pth).")
  flags.DEFINE_enum("model", "teacher", ["teacher", "student"], "Which backbone.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_enum("layout", "timm", list(weights.LAYOUTS), "State-dict layout (torchvision: "
                    "ResNet only).")
  flags.DEFINE_string("heads_out", "", "Also write the heads to this file (.safetensors/.pth).")


def main(argv: Sequence[str]) -> None:
  del argv
  fl = flags.FLAGS
  for name in ("workdir", "out"):
    if not fl[name].value:
      raise app.UsageError(f"--{name} is required")
  for path in (fl.out, fl.heads_out):
    if path and not path.endswith((".safetensors", ".pth")):
      raise app.UsageError(f"{path}: the file must end in .safetensors or .pth")
  from adam_v2_jax import checkpoint   # pylint: disable=g-import-not-at-top
  config, step, variables, heads = checkpoint.load_weights_or_exit("export", fl.workdir,
                                                                   fl.step, fl.model)
  try:
    export_variables(config.model.backbone, variables, fl.out, layout=fl.layout, heads=heads,
                     heads_out=fl.heads_out, config=config, step=step, model=fl.model)
  except ValueError as e:  # an export the layout cannot hold, named by the message
    cli.fail("export", e)
  print(f"{fl.out}: {config.model.backbone} {fl.model} step {step} ({fl.layout} layout); "
        f"{sidecar_path(fl.out)}" + (f"; heads in {fl.heads_out}" if fl.heads_out else ""))


if __name__ == "__main__":
  _define_flags()
  cli.run(main, "export")
