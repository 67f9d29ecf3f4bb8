"""The device mesh, the shardings of state and batch, and the global batch from per-host arrays.

Data parallelism over one mesh axis 'data': parameters replicated, every batch array sharded along
its leading (anchor) axis. Statistics over the batch axis (BatchNorm, the teacher center) are then
global-batch statistics under jit, whatever the number of hosts.
"""
import itertools

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
_CHECKS = itertools.count()


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (all hosts), each host's devices one contiguous block.

  On multi-slice TPU pods the devices are ordered slice by slice so the data axis spans the slices
  (DCN) outermost. jax.make_mesh orders a TPU slice's devices as a ring through the torus, which
  interleaves hosts (a v4-32 gives hosts 0,1,2,3,0,1,...); every host must feed one contiguous
  block of the batch (process_slice), so the order is then stably regrouped host by host, keeping
  the physical order within each host.
  """
  devices = jax.devices() if devices is None else devices
  if len({getattr(d, "slice_index", 0) for d in devices}) > 1:
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    n_slices = len({d.slice_index for d in devices})
    grid = mesh_utils.create_hybrid_device_mesh((len(devices) // n_slices,), (n_slices,), devices)
  else:
    grid = jax.make_mesh((len(devices),), (DATA,), axis_types=(AxisType.Auto,),
                         devices=devices).devices
  order = host_contiguous(list(grid.reshape(-1)))
  return Mesh(np.asarray(order), (DATA,), axis_types=(AxisType.Auto,))


def host_contiguous(devices: list) -> list:
  """`devices` stably sorted by (slice, process): each host's devices adjacent, in given order."""
  return sorted(devices, key=lambda d: (getattr(d, "slice_index", 0) or 0, d.process_index))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the data axis."""
  return NamedSharding(mesh, P(DATA))


def global_batch(host_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's local numpy batch (its contiguous slice of the global batch, in
  process order) into global jax.Arrays sharded along the anchor axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in host_batch.items()}


def fetch(tree):
  """Device arrays -> host numpy (replicated values are read from the local copy)."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def process_slice(mesh: Mesh, global_size: int) -> tuple[int, int]:
  """The contiguous rows [start, stop) of a global batch of `global_size` that this process feeds.

  make_array_from_process_local_data takes each process's rows in the order of its devices in the
  mesh; the pipeline must produce exactly those rows, so the global batch is the same whatever the
  number of hosts."""
  index_map = batch_sharded(mesh).addressable_devices_indices_map((global_size,))
  spans = sorted((idx[0].start or 0, idx[0].stop or global_size) for idx in index_map.values())
  start, stop = spans[0][0], spans[-1][1]
  covered = sum(b - a for a, b in {s: None for s in spans})
  if covered != stop - start:
    raise ValueError(f"this process's devices hold non-contiguous batch rows {spans}; "
                     "use a device order with each host's devices contiguous")
  return start, stop


def barrier(name: str, timeout_s: int = 3600):
  """Waits until every process reaches `name` (a no-op with one process).

  Through the coordination service, not a device collective: CPU collectives (gloo) give up after
  30 s, less than one host may lag another in compiling a step on a loaded machine.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)


def gather(name: str, value: str, timeout_s: int = 600) -> list[str]:
  """Every process's `value`, in process order ([value] alone).

  Through the coordination service's key-value store, like barrier; every process must call it
  with the same names in the same order (a call counter makes the keys unique).
  """
  if jax.process_count() == 1:
    return [value]
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client
  key = f"adam_v2_jax/{name}/{next(_CHECKS)}"
  client.key_value_set(f"{key}/{jax.process_index()}", value)
  return [client.blocking_key_value_get(f"{key}/{p}", timeout_s * 1000)
          for p in range(jax.process_count())]


def all_ok(name: str, ok: bool) -> bool:
  """True on every process when `ok` is true on every process, else False on every process, so
  that the hosts take the same branch after a step that may fail on one of them."""
  return all(v == "1" for v in gather(f"ok/{name}", "1" if ok else "0"))


def check_same_on_every_process(name: str, value: str, timeout_s: int = 600):
  """Raises ValueError on every process when the processes' `value`s differ (a no-op alone).
  `name` says what is compared (it is part of the key and of the message)."""
  values = gather(f"same/{name}", value, timeout_s)
  if len(set(values)) > 1:
    raise ValueError(f"{name} differs between processes: " + ", ".join(
        f"process {p} has {v}" for p, v in enumerate(values)) + "; every host must read the same "
        "data (the same files, readable everywhere)")
