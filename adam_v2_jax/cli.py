"""What the command-line tools share: a bad invocation or unreadable input ends in one line.

main, prepare, export, embed and evaluate end such a run with `PROG: error: MESSAGE` on stderr
and exit code 2, as argparse does for usage errors (main exits 3 on divergence), never with a
traceback or a page of usage. `run` gives absl tools that behaviour for flag errors too (absl's
own is exit 1 after the usage text).
"""
import re
import sys
from typing import Callable, NoReturn

from absl import app, flags


class _IntListParser(flags.ListParser):
  """'0,1,2' -> [0, 1, 2]; anything else is a flag error naming the flag and its value."""

  def parse(self, argument):
    try:
      return [int(v) for v in super().parse(argument)]
    except ValueError:
      raise ValueError("comma-separated integers, e.g. 0,1") from None


def define_int_list(name: str, default, help_text: str):
  """A flag holding a comma-separated list of integers (a list of ints, or None)."""
  return flags.DEFINE(_IntListParser(), name, default, help_text,
                      serializer=flags.ListSerializer(","))


def report(prog: str, message) -> None:
  """Prints `prog: error: message` to stderr."""
  print(f"{prog}: error: {message}", file=sys.stderr)


def fail(prog: str, message, code: int = 2) -> NoReturn:
  """report(prog, message), then exits with `code`."""
  report(prog, message)
  sys.exit(code)


def flag_message(error: Exception) -> str:
  """absl's flag error as one line; required flags left out are named together."""
  text = str(error)
  missing = re.findall(r"Flag (--\w+) must have a value other than None", text)
  if missing:
    return f"missing {', '.join(missing)} (--helpshort lists the flags)"
  return " ".join(l.strip() for l in text.splitlines() if l.strip())


def run(main: Callable, prog: str) -> None:
  """absl.app.run(main), with flag errors and app.UsageError ending as fail(prog, ...)."""

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(prog, flag_message(e))

  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      fail(prog, e)

  app.run(guarded, flags_parser=parse)
