"""What the command-line tools share: a bad invocation or unreadable input ends in one line.

main, prepare, export, embed and evaluate end such a run with `PROG: error: MESSAGE` on stderr
and exit code 2, as argparse and absl do for usage errors (main exits 3 on divergence), never
with a traceback.
"""
import sys
from typing import NoReturn


def report(prog: str, message) -> None:
  """Prints `prog: error: message` to stderr."""
  print(f"{prog}: error: {message}", file=sys.stderr)


def fail(prog: str, message, code: int = 2) -> NoReturn:
  """report(prog, message), then exits with `code`."""
  report(prog, message)
  sys.exit(code)
