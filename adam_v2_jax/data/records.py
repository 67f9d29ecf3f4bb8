"""What a source yields, and how it says a record is bad."""
from typing import TypedDict

import numpy as np


class Record(TypedDict):
  """One decoded image. image: uint8 or uint16 [H, W, C] with C in {1, 3}; id: a stable name."""
  image: np.ndarray
  id: str


class BadRecord(Exception):
  """A record that cannot be used (corrupt, empty, not an image, too small). The message names the
  file or record id and what is wrong; the pipeline skips the record, counts it and logs it."""
