"""tinygrad helpers the reference agents share: numpy weight init, in-place buffer reads and writes."""
from __future__ import annotations

import numpy as np
from tinygrad import Tensor


def orthogonal(rng: np.random.Generator, fan_in: int, fan_out: int, gain: float) -> np.ndarray:
  a = rng.standard_normal((max(fan_in, fan_out), min(fan_in, fan_out)))
  q, r = np.linalg.qr(a)
  q *= np.sign(np.diag(r))
  return (gain * (q if fan_in >= fan_out else q.T)).astype(np.float32)


def copyout(t: Tensor, out: np.ndarray) -> np.ndarray:
  """Read a realized, contiguous tensor into a preallocated numpy array (`.numpy()` adds a copy kernel)."""
  assert t.shape == out.shape and t.uop.op.name in ("BUFFER", "RESHAPE") and t.uop.base.op.name == "BUFFER", \
    f"{t.shape} {t.uop.op} is not a plain buffer of shape {out.shape}"
  buf = t.uop.buffer
  buf.allocator._copyout(memoryview(out).cast("B"), buf._buf)
  return out


def copyin(t: Tensor, arr: np.ndarray) -> None:
  """Write a numpy array into a realized tensor's buffer in place (no new Tensor, no kernel)."""
  assert t.shape == arr.shape, f"shape {arr.shape} does not match buffer {t.shape}"
  buf = t.uop.buffer
  buf.allocator._copyin(buf._buf, memoryview(np.ascontiguousarray(arr, dtype=np.float32)).cast("B"))


class Replay:
  """A replay buffer of fixed-width float32 rows in one numpy ring buffer (the oldest rows are overwritten)."""
  def __init__(self, capacity: int, width: int):
    self.rows = np.zeros((capacity, width), np.float32)
    self.len = self.pos = 0

  def add(self, rows: np.ndarray) -> None:
    cap = len(self.rows)
    self.rows[(self.pos + np.arange(len(rows))) % cap] = rows
    self.pos, self.len = (self.pos + len(rows)) % cap, min(self.len + len(rows), cap)

  def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
    return self.rows[rng.integers(0, self.len, n)]
