"""tinygrad helpers the reference agents share: numpy weight init, views into a flat parameter buffer,
Adam on such a buffer, in-place buffer reads and writes, a numpy replay buffer."""
from __future__ import annotations

import numpy as np
from tinygrad import Tensor


def orthogonal(rng: np.random.Generator, fan_in: int, fan_out: int, gain: float) -> np.ndarray:
  a = rng.standard_normal((max(fan_in, fan_out), min(fan_in, fan_out)))
  q, r = np.linalg.qr(a)
  q *= np.sign(np.diag(r))
  return (gain * (q if fan_in >= fan_out else q.T)).astype(np.float32)


def mlp_layout(prefix: str, sizes: list[int]) -> list[tuple[str, tuple[int, ...]]]:
  """(name, shape) of an MLP's weights and biases, in order: {prefix}w0, {prefix}b0, {prefix}w1, ..."""
  out = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])): out += [(f"{prefix}w{i}", (a, b)), (f"{prefix}b{i}", (b,))]
  return out


def views(flat: Tensor, layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, Tensor]:
  """Named views into one flat parameter buffer, in layout order. `contiguous_backward` per view keeps the
  backward pass from computing the whole flat gradient through one `where()` (tinygrad-notes)."""
  out, off = {}, 0
  for name, shape in layout:
    n = int(np.prod(shape))
    out[name] = flat[off:off + n].reshape(shape).contiguous_backward()
    off += n
  return out


def relu_mlp(p: dict[str, Tensor], prefix: str, x: Tensor, layers: int) -> Tensor:
  """x through `layers` linear layers {prefix}w{i}, {prefix}b{i} of `p`, ReLU between them."""
  for i in range(layers):
    x = x @ p[f"{prefix}w{i}"] + p[f"{prefix}b{i}"]
    if i < layers - 1: x = x.relu()
  return x


def adam_lr(lr: float, t: int) -> float:
  """Adam's bias-corrected step size for step t (betas 0.9, 0.999), computed in numpy and fed to the jit."""
  return lr * (1 - 0.999**t) ** 0.5 / (1 - 0.9**t)


def adam_step(theta: Tensor, mv: Tensor, betas: Tensor, g: Tensor, lr_t: Tensor, eps: float) -> Tensor:
  """Adam on a flat buffer, both moments in one (2, P) buffer `mv` (betas: [[0.9], [0.999]]): one kernel
  for the moments, one for the weights. Assigns both; returns the new weights' expression."""
  mv.assign(mv * betas + (1 - betas) * Tensor.stack(g, g * g))
  new = theta.detach() - lr_t * mv[0] / (mv[1].sqrt() + eps)
  theta.assign(new)
  return new


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


class RunningMeanStd:
  """Running mean and variance of a stream of batches (Chan et al.'s parallel update), as SB3's VecNormalize."""
  def __init__(self, shape: tuple[int, ...] = ()):
    self.mean, self.var, self.count = np.zeros(shape, np.float64), np.ones(shape, np.float64), 1e-4

  def update(self, x: np.ndarray) -> None:
    m, v, n = x.mean(0), x.var(0), len(x)
    delta, total = m - self.mean, self.count + n
    self.mean = self.mean + delta * n / total
    self.var = (self.var * self.count + v * n + delta**2 * self.count * n / total) / total
    self.count = total
