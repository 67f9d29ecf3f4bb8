"""Weights in and out: Flax backbones <-> PyTorch (timm / torchvision) state_dicts."""
from adam_v2_jax.weights.convert import (LAYOUTS, expected_torch_shapes, from_torch_state_dict,
                                         heads_to_torch, load_init, read_state_dict,
                                         save_state_dict, to_torch_state_dict)
from adam_v2_jax.weights.torch_names import Entry, heads_table, table

__all__ = ["LAYOUTS", "expected_torch_shapes", "from_torch_state_dict", "heads_to_torch",
           "load_init", "read_state_dict", "save_state_dict", "to_torch_state_dict", "Entry",
           "heads_table", "table"]
