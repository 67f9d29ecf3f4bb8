"""The configuration schema: every key a run reads, with its default (the released recipe, SPEC 5).

Config files under configs/ start from `base_config()` and change what differs; `smoke()` shrinks
any config to a run of about a minute on 2 CPU cores through the same code path. Checking a config
(types, ranges, device divisibility) lives in validate.py.
"""
import ml_collections

# Tiny members of each family, for smoke runs and tests (see models/registry.py).
TINY_BACKBONE = {"resnet": "tiny_resnet", "convnext": "tiny_convnext", "vit": "tiny_vit"}


def base_config() -> ml_collections.ConfigDict:
  """Defaults of every key. Stage L then stage LCD, levels 0-1-2, ResNet-50, per-device batch 64."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      backbone="resnet50",       # models.registry name: resnet50 | convnext_base | vit_small_patch16_224 | tiny_*
      dtype="auto",              # compute dtype: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16
      out_dim=65536,             # K, the DINO head's output dimension
      head_hidden_dim=2048,
      head_bottleneck_dim=256,
      head_bn=False,             # batch-standardise the DINO head's hidden layers (use_bn_in_head)
      bn_groups="size",          # backbone BatchNorm statistics per view size (one call per size)
                                 # | view (the released code's calls: each 224 px view of stage
                                 # LCD alone, the local views together)
      drop_path=0.0,             # stochastic depth (0 in the released recipe)
      init_from="",              # a timm/torchvision state_dict (.pth/.safetensors) to start from
  ))

  c.data = ml_collections.ConfigDict(dict(
      source="phantom",          # phantom | folder | dicom | tfds | mixture
      path="",                   # folder or DICOM root; for tfds the data_dir
      split_file="",             # optional list of relative paths (ChestX-ray14 train_val_list.txt)
      tfds_name="",              # for source=tfds, e.g. "adam_prepared/cxr14" as built by prepare
      tfds_split="train",
      mixture=[],                # for source=mixture: list of dicts with the keys above plus weight
      mixture_size=0,            # records per epoch of a mixture (0: the sum of its sources)
      mixture_seed=0,
      bit_depth=8,               # 8, or 16 to keep 16-bit radiographs (scaled to 8 on the canvas)
      max_side=0,                # > 0: downscale decoded images whose long side exceeds it
      dicom_normalize="voi",     # voi (VOI LUT / window when present) | minmax
      lcd_border=50,             # px of the image as read that stage-LCD anchors at m >= 1 keep
                                 # from its border (released: 50 on 1024 px images; scale it
                                 # with data.max_side or pre-shrunk copies to keep the share)
      phantom_seed=0,
      channels=1,                # 1: grey radiographs (replicated to 3 on the device); 3: colour
      canvas_size=512,           # anchor canvas side: anchors up to it reach the step unresized
      phantom_size=512,          # phantom image side
      phantom_count=2048,        # phantom "patients" (records per epoch)
      workers=0,                 # grain worker processes (0: in the main process)
      prefetch=2,                # batches prefetched per worker
  ))

  c.views = ml_collections.ConfigDict(dict(
      global_size=224, local_size=96, n_local=8, n_parts=4,
      lcd_global_scale=(0.8, 1.0),   # x1's area range (released global_crops_scale)
      l_global_scale=(0.8, 1.0),     # stage L global crops (released; DINO's own default 0.4-1)
      l_local_scale=(0.05, 0.4),
      jitter=(0.4, 0.4, 0.2, 0.1),   # brightness, contrast, saturation, hue
      jitter_p=0.8,
      rotation_l=30.0, rotation_lcd=10.0,
      blur_sigma=(0.1, 2.0),         # px of a 224 px view; scaled with global_size (sampling)
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
  ))

  c.loss = ml_collections.ConfigDict(dict(
      student_temp=0.1, teacher_temp=0.04,
      warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=0,
      center_momentum=0.9,
      weights=(1.0, 1.0, 1.0),       # localizability, composability, decomposability
      decompose_normalize="per_part",  # per_part | joint (the released code's)
  ))

  c.optim = ml_collections.ConfigDict(dict(
      lr=5e-4,                   # peak lr per 256 anchors of global batch
      min_lr=1e-6, warmup_epochs=10,
      weight_decay=0.04, weight_decay_end=0.4,
      b1=0.9, b2=0.999, eps=1e-8,
      clip_grad=3.0,             # per-tensor gradient norm bound; 0 disables
      freeze_last_layer_epochs=1,
      momentum_teacher=0.996,
  ))

  # Stages run in order; epochs[m] is the number of epochs at level m (0 skips the level).
  c.stages = [
      ml_collections.ConfigDict(dict(mode="L", epochs=(200, 200, 100))),
      ml_collections.ConfigDict(dict(mode="LCD", epochs=(10, 90, 165))),
  ]

  c.per_device_batch = 64
  c.steps_per_epoch = 0          # 0: records // global batch; > 0 caps an epoch (smoke runs)
  c.log_every = 50
  c.checkpoint_every = 1000      # steps; a checkpoint is also written at the end of every level
  c.keep_checkpoints = 3
  c.max_bad_steps = 5            # consecutive non-finite steps before the run stops
  c.debug = ml_collections.ConfigDict(dict(
      nan_at_step=-1, nan_steps=1))  # poison nan_steps batches from this global step (tests)
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks `c` in place to a smoke run: tiny model, small views, both stage kinds, 2 levels."""
  family = next((f for f in TINY_BACKBONE if c.model.backbone.startswith(f)), "resnet")
  c.model.backbone = TINY_BACKBONE[family]
  c.model.dtype = "float32"
  c.model.out_dim = 256
  c.model.head_hidden_dim = 64
  c.model.head_bottleneck_dim = 32
  c.views.global_size, c.views.local_size = 64, 32   # the blur's sigma follows (sampling.py)
  c.views.n_local = 2
  c.data.canvas_size = 128
  c.data.phantom_size = 256
  c.data.phantom_count = 32
  c.per_device_batch = 4
  c.steps_per_epoch = 2
  c.optim.warmup_epochs = 1
  c.stages = [
      ml_collections.ConfigDict(dict(mode="L", epochs=(1, 1))),
      ml_collections.ConfigDict(dict(mode="LCD", epochs=(1, 1))),
  ]
  c.log_every = 1
  c.checkpoint_every = 4
  return c


def dataset_keys(data: ml_collections.ConfigDict) -> list[str]:
  """The keys of config.data that name a dataset and are set (path, tfds_name, mixture)."""
  return [k for k in ("path", "tfds_name", "mixture") if data[k]]


def with_arg(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies a config file's argument (`--config=FILE:arg`): '' for the file as is, 'smoke'."""
  if not arg:
    return c
  if arg == "smoke":
    if c.data.source in ("folder", "dicom", "tfds", "mixture") and not dataset_keys(c.data):
      c.data.source, c.data.channels = "phantom", 1  # no dataset given: the embedded phantom
    return smoke(c)
  raise ValueError(f"unknown config argument {arg!r}; allowed: '' or 'smoke'")
