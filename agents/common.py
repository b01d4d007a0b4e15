"""What the reference agents share: numpy weight init, views into a flat parameter buffer, Adam on such buffers,
in-place buffer reads and writes, named batch columns, a numpy replay buffer, greedy act() for any batch size, and
the profile of where the time went."""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
from tinygrad import Tensor, TinyJit


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


def overridden(cfg, var: str):
  """`cfg` with the fields named in the environment variable `var` replaced: PPO_CONFIG="lr=1e-4 num_envs=16". For
  tuning (agents/TUNING.md) and for the regression gate's demonstration of a slowed variant (README); the referee
  records these variables in each run (`agent_env`), so that a changed configuration is never mistaken for the
  reference's. An unknown field or a value of the wrong type is an error, not ignored."""
  text = os.environ.get(var, "").strip()
  if not text: return cfg
  fields, changes = {f.name: f for f in dataclasses.fields(cfg)}, {}
  for item in text.replace(",", " ").split():
    key, sep, value = item.partition("=")
    if not sep or key not in fields:
      raise ValueError(f"{var}: {item!r} is not FIELD=VALUE with a field of {type(cfg).__name__} ({', '.join(fields)})")
    old = getattr(cfg, key)
    try: changes[key] = (value.lower() in ("1", "true", "yes")) if isinstance(old, bool) else type(old)(value) if old is not None else value
    except ValueError: raise ValueError(f"{var}: {key}={value!r} is not a {type(old).__name__}") from None
  return dataclasses.replace(cfg, **changes)


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


class Columns:
  """Named columns of a 2-D batch (replay rows, minibatches), laid out in the order given; each field's per-row shape
  is () for one number, or n (or (n,)) for n of them. `split(batch)` gives the fields by name, for numpy arrays and tinygrad
  Tensors alike, so a row is read as `data.next_observations`, not `rows[:, O + 2:2 * O + 2]`:

      cols = Columns(observations=4, actions=(), rewards=())      # width 6
      data = cols.split(batch)                                   # data.observations: (B, 4); data.actions: (B,)
  """
  def __init__(self, **fields: int | tuple):
    self.fields, off = {}, 0
    for name, shape in fields.items():
      n = None if shape == () else int(shape[0] if isinstance(shape, tuple) else shape)   # () or n or (n,)
      self.fields[name] = (off, n)
      off += 1 if n is None else n
    self.width = off

  def index(self, name: str) -> int | slice:
    off, n = self.fields[name]
    return off if n is None else slice(off, off + n)

  def split(self, batch) -> SimpleNamespace:
    return SimpleNamespace(**{name: batch[:, self.index(name)] for name in self.fields})

  def fill(self, out: np.ndarray, **values) -> np.ndarray:
    """Write fields into the rows of `out` (numpy), each value broadcast to its columns; returns `out`."""
    for name, v in values.items(): out[:, self.index(name)] = v
    return out

  def extend(self, **fields: int | tuple) -> Columns:
    """These columns, then more."""
    return Columns(**{k: (() if n is None else n) for k, (_, n) in self.fields.items()}, **fields)


class Adam:
  """Adam (betas 0.9, 0.999) on flat parameter buffers: both moments of each in one (2, P) buffer, the step size
  bias-corrected in numpy and fed to the jit (`next_lr`), so that a step is two elementwise kernels per buffer."""
  def __init__(self, *params: Tensor, lr: float, eps: float):
    self.lr, self.eps, self.t = lr, eps, 0
    self.moments = [Tensor.zeros(2, p.shape[0]).contiguous().realize() for p in params]
    self.betas = Tensor([[0.9], [0.999]]).realize()

  def next_lr(self) -> float:
    """The next step's step size (call once per gradient step, before the jitted update)."""
    self.t += 1
    return adam_lr(self.lr, self.t)

  def step(self, i: int, theta: Tensor, g: Tensor, lr_t: Tensor) -> Tensor:
    """Inside the jit: one step of parameter buffer i; returns the new weights' expression."""
    return adam_step(theta, self.moments[i], self.betas, g, lr_t, self.eps)

  def forget(self) -> None:
    """Zero the moments (after capturing an update on a dummy batch with step size 0)."""
    for m in self.moments: copyin(m, np.zeros(m.shape, np.float32))


def jit(fn: Callable) -> TinyJit:
  """TinyJit that captures on its first call. TinyJit runs call 1 plainly and captures call 2, so that state a first
  call creates lazily is realized before capture; these agents realize all their state in __init__, and the plain
  call 1 would only schedule and lower the whole graph once more (tinygrad's start-up is most of a short run:
  agents/TUNING.md "Start-up"). `cnt` is TinyJit's call counter (tinygrad 0.14; tests/test_tinygrad_compat.py)."""
  j = TinyJit(fn)
  j.cnt = 1
  return j


class Greedy:
  """An agent's act() for any batch size: `fn(obs) -> actions`, jitted. With `rows`, one jit for every batch: each
  call pads its observations into one `rows`-row buffer (larger batches go in chunks), so that a fresh process
  schedules and lowers one graph instead of one per batch size (the referee evaluates at 10 and 100: 0.36 s each
  on PPO CartPole, charged to the clock; agents/TUNING.md "Start-up"). Without, a jit and buffer per batch size
  (TinyJit does not see a shape change on a plain input: a buffer per size does): for big inputs (pixels)."""
  def __init__(self, fn: Callable[[Tensor], Tensor], obs_dim: int, out_shape: tuple[int, ...] = (), dtype=np.float32,
               rows: int | None = None):
    self.fn, self.obs_dim, self.out_shape, self.dtype, self.rows = fn, obs_dim, out_shape, dtype, rows
    self.cache: dict[int, tuple] = {}

  def _jit(self, n: int) -> tuple:
    if n not in self.cache:
      self.cache[n] = (jit(lambda x: self.fn(x).contiguous().realize()), Tensor.zeros(n, self.obs_dim).contiguous().realize(),
                       np.zeros((n, self.obs_dim), np.float32), np.zeros((n, *self.out_shape), self.dtype))
    return self.cache[n]

  def __call__(self, obs: np.ndarray) -> np.ndarray:
    obs = np.asarray(obs, np.float32).reshape(len(obs), self.obs_dim)
    if self.rows is None:
      fn, buf, _, out = self._jit(len(obs))
      copyin(buf, obs)
      return copyout(fn(buf), out)
    fn, buf, x, out = self._jit(self.rows)
    res = np.empty((len(obs), *self.out_shape), self.dtype)
    for i in range(0, len(obs), self.rows):
      chunk = obs[i:i + self.rows]
      x[:len(chunk)] = chunk
      copyin(buf, x)
      res[i:i + len(chunk)] = copyout(fn(buf), out)[:len(chunk)]
    return res


class Profile(dict):
  """Where an agent's time went, in seconds and counts (`agent.profile`, copied into the run record by the referee)."""
  @contextmanager
  def timed(self, key: str, first: str | None = None):
    """Add the block's wall time to `key`; the first call's to `first` instead, if given (it compiles)."""
    t0 = time.perf_counter()
    try: yield
    finally:
      dt = time.perf_counter() - t0
      if first is not None and self.get(first, 0.0) == 0.0: self[first] = dt
      else: self[key] = self.get(key, 0.0) + dt


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
