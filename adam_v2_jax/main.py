"""Entry point: flags, multi-process init, config checks, then the training loop.

  python -m adam_v2_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m adam_v2_jax.main --config=configs/cxr_convnext.py:smoke --workdir=/tmp/smoke
  python -m adam_v2_jax.main --config=configs/cxr_resnet50.py --workdir=/mnt/gcs/run \
      --config.data.path=/data/cxr14/images --config.data.split_file=/data/cxr14/train_val_list.txt
"""
import logging as std_logging
import os
import re
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from adam_v2_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, checkpoints.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs started by "
                                   "hand (TPU VMs and SLURM are detected automatically).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_LOCAL_DEVICES = cli.define_int_list("local_device_ids", None, "Comma-separated local device "
                                     "ids this process uses (one process per GPU).")
flags.mark_flags_as_required(["config", "workdir"])


def _in_cluster() -> bool:
  """A multi-process launch that jax.distributed.initialize() can read by itself."""
  env = os.environ
  return (int(env.get("SLURM_NTASKS", "1")) > 1 or "JAX_COORDINATOR_ADDRESS" in env
          or "MEGASCALE_COORDINATOR_ADDRESS" in env or
          len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1)


def init_distributed():
  """jax.distributed.initialize() when the run has several processes; must run before any other
  JAX call and only in the main process (grain workers are spawned and must not call it)."""
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value or (_NUM_PROCESSES.value or 1) > 1:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               local_device_ids=_LOCAL_DEVICES.value or None)  # "" is unset
  elif _in_cluster():
    jax.distributed.initialize()


def check_process_flags():
  """The hand-started multi-process flags go together: a lone one was ignored or crashed in JAX."""
  n, pid, coord = _NUM_PROCESSES.value, _PROCESS_ID.value, _COORDINATOR.value
  if n is not None and n < 1:
    cli.fail("main", f"--num_processes={n} must be >= 1")
  if (n or 1) > 1 and not coord:
    cli.fail("main", f"--num_processes={n} needs --coordinator_address=HOST:PORT (process 0's)")
  if pid is not None and not coord:
    cli.fail("main", f"--process_id={pid} needs --coordinator_address and --num_processes")
  if coord and (n is None or pid is None):
    cli.fail("main", "--coordinator_address needs --num_processes and --process_id")
  if pid is not None and not 0 <= pid < n:
    cli.fail("main", f"--process_id={pid} must lie in [0, --num_processes={n})")
  if _LOCAL_DEVICES.value and (n or 1) == 1:
    cli.fail("main", "--local_device_ids is for multi-process runs (with --num_processes)")


class _QuietLibraries:
  """Drops INFO lines of orbax, grain and jax (tens per checkpoint); warnings still show."""

  def filter(self, record):
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain", "jax", "etils"))
    return record.levelno >= std_logging.WARNING or not noisy  # absl's WARNING is -1


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  check_process_flags()
  init_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  from adam_v2_jax import checkpoint, health, train, validate  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    validate.check(config, jax.device_count(), _WORKDIR.value)
    logging.info("process %d/%d, backend %s", jax.process_index(), jax.process_count(),
                 jax.default_backend())
    result = train.run(config, _WORKDIR.value)
  except (validate.ConfigError, checkpoint.NoCheckpointLeft) as e:  # before any step
    logging.error("%s", e)
    cli.fail("main", e)
  except health.Diverged as e:
    logging.error("%s", e)
    cli.fail("main", e, code=3)
  if result.get("preempted"):
    print(f"preempted at step {result['step']}; checkpoint saved. Resume with the same command.")


def parse_flags(argv):
  """absl flag parsing that turns a bad --config.key=value into one clear line (exit 2)."""
  try:
    rest = flags.FLAGS(argv)
    _CONFIG.value.keys()  # a config that failed to load raises on first use: here, not later
    return rest
  except OSError as e:  # the config file: missing, unreadable
    detail = " ".join(l.strip() for l in str(e).splitlines()[1:] if l.strip())
    cli.fail("main", f"--config: the config file could not be loaded: {detail or e}")
  except (AttributeError, KeyError, TypeError, ValueError, SyntaxError, flags.Error) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    text = str(e)
    if isinstance(e, flags.Error) and "Error whilst parsing config file" in text:  # wrapped
      raised = [l.strip() for l in text.splitlines() if l.strip()][-1]
      _config_raised(raised, re.findall(r'File "([^"]+)", line (\d+)', text))
    if not bad and isinstance(e, flags.Error):  # not the config: a missing or malformed flag
      cli.fail("main", cli.flag_message(e))
    lines = [l.strip() for l in str(e).replace("\\n", "\n").splitlines() if l.strip()]
    msg = lines[-1] if "Traceback" in str(e) else " ".join(lines)
    msg = msg.replace("\\'", "'")
    if len(msg) > 1 and msg[0] == msg[-1] and msg[0] in "'\"":  # a repr's quotes, as a pair
      msg = msg[1:-1]
    cli.fail("main", f"bad configuration flag among {bad or argv[1:]}: {msg}")
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code raised
    _config_raised(f"{type(e).__name__}: {e}",
                   [(f.filename, f.lineno) for f in traceback.extract_tb(e.__traceback__)])


def _config_raised(raised: str, frames):
  """Fails naming the error and the innermost (file, line) of `frames` outside installed
  packages: the line of the config file that raised."""
  mine = [f for f in frames if "-packages" not in f[0]]
  where = f" ({mine[-1][0]}, line {mine[-1][1]})" if mine else ""
  cli.fail("main", f"--config: loading the config raised {raised}{where}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
