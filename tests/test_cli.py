"""cli.py: every command-line tool ends a bad invocation with one line and exit code 2."""
import subprocess
import sys

import pytest

from adam_v2_jax import cli
from tests.helpers import ROOT, run_env


@pytest.mark.parametrize("module, args, words", [
    ("main", [], ["main: error: missing --config, --workdir"]),
    ("main", ["--config=configs/demo.py:nope", "--workdir=/tmp/never"],
     ["main: error:", "unknown config argument 'nope'"]),
    ("evaluate", [], ["evaluate: error: missing --workdir, --out"]),
    ("export", ["--workdir=/tmp/never", "--out=w.txt"],
     ["export: error: w.txt: the file must end in .safetensors or .pth"]),
    ("embed", ["--batch_size=x"], ["embed: error:", "--batch_size=x", "int()"]),
])
def test_flag_errors_are_one_line_and_exit_2(module, args, words):
  # absl's own handling printed the usage text (or a traceback) and exited 1
  out = subprocess.run([sys.executable, "-m", f"adam_v2_jax.{module}", *args], cwd=ROOT,
                       env=run_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, out.stderr[-2000:]
  for w in words:
    assert w in lines[0]


def test_fail_prints_one_line_and_exits_with_the_code(capsys):
  with pytest.raises(SystemExit) as e:
    cli.fail("tool", "bad thing", code=3)
  assert e.value.code == 3 and capsys.readouterr().err == "tool: error: bad thing\n"


def test_a_config_file_that_raises_is_named_in_one_line(tmp_path):
  # its get_config raising (not a flag error) used to end in a traceback and exit 1
  bad = tmp_path / "my_config.py"
  bad.write_text("def get_config(arg=None):\n  return {'a': 1} / 0\n")
  out = subprocess.run([sys.executable, "-m", "adam_v2_jax.main", f"--config={bad}",
                        f"--workdir={tmp_path / 'w'}"], cwd=ROOT, env=run_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert lines == [f"main: error: --config: loading the config raised TypeError: unsupported "
                   f"operand type(s) for /: 'dict' and 'int' ({bad}, line 2)"]
  assert not (tmp_path / "w").exists()


def test_a_config_file_raising_outside_flag_errors_is_named_too(tmp_path):
  bad = tmp_path / "my_config.py"  # ZeroDivisionError is not wrapped by ml_collections
  bad.write_text("def get_config(arg=None):\n  x = 1\n  return x / 0\n")
  out = subprocess.run([sys.executable, "-m", "adam_v2_jax.main", f"--config={bad}",
                        f"--workdir={tmp_path / 'w'}"], cwd=ROOT, env=run_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr == (f"main: error: --config: loading the config raised ZeroDivisionError: "
                        f"division by zero ({bad}, line 3)\n")
