"""Demo: a small Adam-v2 model on the embedded chest-radiograph phantom, minutes on a laptop CPU.

Both stages (L, then LCD) at two levels of the hierarchy, all three branches, through the same
code as the full recipe; only sizes are small (64/32 px views, the blur's sigma scaled with them,
a tiny ResNet, K = 256), and two
settings keep a run this short and small from drifting to a uniform teacher output: the DINO head
batch-standardises its hidden layers (model.head_bn, DINO's use_bn_in_head) and the teacher
temperature is 0.02 (with the recipe's 0.04 the teacher's entropy climbs to ln K in minutes).

  python -m adam_v2_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m adam_v2_jax.main --config=configs/demo.py:smoke --workdir=/tmp/demo_smoke
"""
import ml_collections

from adam_v2_jax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model.backbone = "tiny_resnet"
  c.model.out_dim, c.model.head_hidden_dim, c.model.head_bottleneck_dim = 256, 512, 128
  c.model.head_bn = True
  c.loss.teacher_temp = c.loss.warmup_teacher_temp = 0.02   # sharper teacher: no uniform drift
  c.data.source = "phantom"
  c.data.phantom_size, c.data.phantom_count, c.data.canvas_size = 256, 512, 128
  c.views.global_size, c.views.local_size = 64, 32   # the blur's sigma scales with them
  c.per_device_batch = 32
  c.optim.lr = 2e-3              # per 256 anchors; short runs want a higher rate than the recipe
  c.optim.warmup_epochs = 1
  c.optim.momentum_teacher = 0.99
  c.stages = [
      ml_collections.ConfigDict(dict(mode="L", epochs=(3, 3))),
      ml_collections.ConfigDict(dict(mode="LCD", epochs=(3, 3))),
  ]
  c.log_every = 8
  c.checkpoint_every = 96
  return configlib.with_arg(c, arg)
