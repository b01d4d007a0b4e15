"""The agent's process. It opens the tinygrad device and imports libraries (untimed start-up), then obeys
the referee's requests over a socket, in the message types of bench/referee/protocol.py (no pickle). It has no
clock the referee trusts and no evaluation seeds, and everything it replies is checked as untrusted.

Before every reply it synchronises the tinygrad device, so that queued device work is finished inside the request
(the referee freezes the process between requests: PROTOCOL.md section 12).

The same program serves as an evaluator (PROTOCOL.md section 3): a process of its own that builds the agent, then
for each evaluation takes the training process's snapshot (`Restore`) and answers act(). A snapshot is every
tinygrad Tensor reachable from the agent (tinygrad's get_state_dict) plus what the agent's optional `snapshot()`
returns (arrays its act() needs besides: an observation normaliser's statistics); a restore assigns each Tensor the
evaluator's agent has under the same name and shape, and hands the rest to the agent's optional `restore()`.
"""
from __future__ import annotations

import importlib
import io
import math
import os
import socket
import sys
import time
import traceback

import numpy as np  # loaded by protocol.py already

from bench.referee import protocol as P

DEVICE = None    # the tinygrad device opened at start-up


def _preload(modules: list[str], task) -> P.Loaded:
  """Library imports and device start-up: process start-up, not agent time. A peer's preload may also name a
  `module:function` that prepares it for the task (RLtools compiles its C++ module): called with the task."""
  import gymnasium  # noqa: F401
  import numpy  # noqa: F401

  from bench.peers import preload
  for m in modules:
    try: importlib.import_module(m.partition(":")[0])
    except ImportError: continue      # the agent's own import then fails with its message
    preload(m, task)                  # imported already; calls a `module:function` with the task
  import tinygrad
  from tinygrad import Device
  global DEVICE
  DEVICE = Device[Device.DEFAULT]      # the device the referee asked for (DEV=), kept: the agent may change DEFAULT
  _start_compile_pool()
  _warm_tinygrad()
  return P.Loaded(pid=os.getpid(), tinygrad_version=str(getattr(tinygrad, "__version__", "") or _dist_version("tinygrad")),
                  tinygrad_device=str(Device.DEFAULT))


def _pool_ready(_: int) -> int:
  """In a compile worker: the import its compile tasks need, and a moment, so that each worker takes one."""
  import tinygrad.engine.realize  # noqa: F401
  time.sleep(0.2)
  return os.getpid()


def _start_compile_pool() -> None:
  """tinygrad's pool of compile worker processes, started now (untimed start-up, like the imports) with every worker
  up. Else it starts when several kernels are first lowered at once, which for most agents is the first act() of the
  untrained evaluation: the workers' imports then run on into the following act() calls, and the referee counts them
  as work while train() is suspended (an honest PPO Pendulum run failed that way). The referee also keeps its workers
  for the whole run (BEAM_MAX_TASKS_PER_CHILD, unless set), so that no replacement starts up during an evaluation."""
  from tinygrad.engine.worker import get_worker_pool

  import bench.referee.agent_host as this  # run as __main__, which the workers cannot import: name the function by its module
  pool = get_worker_pool()
  if pool is not None: pool.map(this._pool_ready, range(getattr(pool, "_processes", 1)), chunksize=1)


def _warm_tinygrad() -> None:
  """tinygrad's own one-time start-up, untimed like `import torch` for a peer: the same small computation for every agent
  (a matmul, an activation, reductions, an argmax) makes tinygrad compile its rewrite rules and fill its per-process
  caches, which it otherwise does inside the agent's first calls (0.24 s of PPO CartPole's start-up; a version that
  also took a gradient saved less: agents/TUNING.md "Start-up"). Nothing of the agent's: its own kernels are still
  scheduled and lowered on the clock."""
  from tinygrad import Tensor
  x = Tensor.ones(4, 4).contiguous().realize()
  w = Tensor.ones(4, 4).contiguous().realize()
  (x @ w).relu().sum().realize()
  (x @ w).argmax(-1).realize()
  _sync()


def _dist_version(name: str) -> str:
  from importlib.metadata import PackageNotFoundError, version
  try: return version(name)
  except PackageNotFoundError: return ""


def _sync() -> None:
  DEVICE.synchronize()


FOREIGN = frozenset({"torch", "jax", "jaxlib", "flax", "optax", "gymnasium", "stable_baselines3", "sbx", "numpy", "pandas", "tinyrl"})


def tensors(agent, max_objects: int = 100_000, max_list: int = 10_000) -> dict:
  """{name: Tensor} of every tinygrad Tensor reachable from the agent's attributes, through lists, tuples, dicts and
  objects, named as tinygrad's get_state_dict names them ("layers.0.weight"), each object visited once (get_state_dict
  itself recurses without end on a cycle, and into a module an attribute names). Modules, classes, functions and
  methods are not entered, nor lists longer than `max_list` (a replay buffer of Python objects), nor objects of the
  libraries in FOREIGN (a peer's torch model and its environments: 80 ms of walking a snapshot for SB3's DQN, every
  evaluation, for no Tensor; a tinygrad Tensor hidden there is only missing from the agent's own evaluations)."""
  import types

  from tinygrad import Tensor
  skip = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, str, bytes, int, float, bool)
  found, seen, stack = {}, set(), [("", agent)]
  while stack and len(seen) < max_objects:
    prefix, obj = stack.pop()
    if id(obj) in seen or obj is None or isinstance(obj, skip) or type(obj).__module__.partition(".")[0] in FOREIGN: continue
    seen.add(id(obj))
    if isinstance(obj, Tensor):
      found.setdefault(prefix.strip("."), obj)
      continue
    if hasattr(obj, "_asdict"): items = list(obj._asdict().items())
    elif isinstance(obj, dict): items = list(obj.items())
    elif isinstance(obj, (list, tuple)): items = list(enumerate(obj)) if len(obj) <= max_list else []
    elif hasattr(obj, "__dict__"): items = list(vars(obj).items())
    else: continue
    stack.extend((f"{prefix}{k}.", v) for k, v in reversed(items))
  return found


def snapshot(agent) -> dict:
  """{"t/<name>": array} of the agent's Tensors and {"x/<name>": array} of its optional snapshot()."""
  from bench.referee.agent_api import AgentError
  out = {f"t/{k}": v.numpy() for k, v in tensors(agent).items()}
  if hasattr(agent, "snapshot"):
    extra = agent.snapshot()
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in extra.items()):
      raise AgentError("snapshot() must return a dict of str -> numpy array (PROTOCOL.md section 3)")
    out.update({f"x/{k}": v for k, v in extra.items()})
  return out


def restore(agent, state: dict) -> None:
  """Each Tensor of the agent that the snapshot holds under its name (and shape) takes the snapshot's values in place
  (assign: a jitted act() reads the same buffers); the rest goes to the agent's restore(). A Tensor only one side has
  (a jitted function's cache, built on its own calls) is left alone."""
  from tinygrad import Tensor

  from bench.referee.agent_api import AgentError
  for k, t in tensors(agent).items():
    a = state.get(f"t/{k}")
    if a is None or tuple(a.shape) != tuple(t.shape): continue
    t.assign(Tensor(a, device=t.device, dtype=t.dtype)).realize()
  extra = {k[2:]: v for k, v in state.items() if k.startswith("x/")}
  if extra:
    if not hasattr(agent, "restore"): raise AgentError("the agent's snapshot() has no restore() to take it back (PROTOCOL.md section 3)")
    agent.restore(extra)


def pack(arrays: dict):
  """An .npz archive (numbers only: np.load refuses pickles) as a uint8 array."""
  from bench.referee.agent_api import AgentError
  for k, v in arrays.items():
    if v.dtype.name not in P.DTYPES: raise AgentError(f"the snapshot's {k!r} has dtype {v.dtype}: numbers only")
  buf = io.BytesIO()
  np.savez(buf, **{k: np.require(v, requirements="C") for k, v in arrays.items()})   # 0-d stays 0-d
  return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def unpack(blob) -> dict:
  with np.load(io.BytesIO(blob.tobytes()), allow_pickle=False) as z: return {k: z[k] for k in z.files}


class Host:
  """The agent in this process and its one train() generator, answering the referee's requests one at a time."""
  def __init__(self):
    # imported once here, not per request: act() answers thousands of requests, on the clock when evaluated in place
    from bench.referee.agent_api import AgentError, load_agent_class
    from envs import Task
    from envs.counting import STEPS
    self.error, self.load_class, self.task_from_wire = AgentError, load_agent_class, Task.from_wire
    self.counter, self.cls, self.agent, self.gen, self.task, self.agent_steps = STEPS, None, None, None, None, 0

  def answer(self, msg):
    """The reply to one request (None: Close). Every request that runs agent code ends with its device work done (_sync)."""
    if isinstance(msg, P.Close): return None
    if isinstance(msg, P.Load):
      self.task = self.task_from_wire(msg.task)
      return _preload(msg.preload, self.task)
    if isinstance(msg, P.Import): self.cls, reply = self.load_class(msg.target), P.Ok()
    elif isinstance(msg, P.Construct): self.agent, reply = self.cls(self.task, msg.seed), P.Ok()
    elif isinstance(msg, P.Train): reply = self.train(msg)
    elif isinstance(msg, P.Snapshot):
      state = snapshot(self.agent)
      reply = P.State(blob=pack(state), arrays=len(state))
    elif isinstance(msg, P.Restore):
      restore(self.agent, unpack(msg.blob))
      reply = P.Ok()
    else: reply = self.act(msg.obs)
    _sync()
    return reply

  def train(self, msg: P.Train) -> P.Trained:
    """train()'s generator run on until the steps asked for, or `max_s` seconds, or its end."""
    if self.gen is None:
      self.gen = self.agent.train()
      if not hasattr(self.gen, "__next__"): raise self.error("train() must return a generator (use `yield steps`)")
    t0 = time.perf_counter()
    while True:
      try: y = next(self.gen)
      except StopIteration: return self.trained(True)
      try: y_ok = float(y) == int(y) and self.agent_steps <= int(y) < 2**62
      except (TypeError, ValueError, OverflowError): y_ok = False
      if not y_ok:
        bad = "a non-finite" if isinstance(y, float) and not math.isfinite(y) else "an invalid"
        raise self.error(f"train() yielded {bad} step count {y!r}: yield the cumulative env steps (a non-decreasing int)")
      self.agent_steps = int(y)
      if P.env_steps(self.counter.count, self.agent_steps) >= msg.until_steps or time.perf_counter() - t0 >= msg.max_s:
        return self.trained(False)

  def trained(self, finished: bool) -> P.Trained:
    prof = getattr(self.agent, "profile", None)
    prof = {P.printable(str(k))[:100]: float(v) for k, v in list(prof.items())[:64]} if isinstance(prof, dict) else {}
    return P.Trained(finished=finished, agent_steps=self.agent_steps, counted_steps=int(self.counter.count), profile=prof)

  def act(self, obs) -> P.Actions:
    a = self.agent.act(obs)
    if not isinstance(a, np.ndarray):
      raise self.error(f"act() returned a {type(a).__name__}, not a numpy array (PROTOCOL.md section 8): "
                       "return np.asarray(actions) with the action space's dtype")
    if a.dtype.name not in P.DTYPES: raise self.error(f"act() returned an array of dtype {a.dtype}: return numbers")
    return P.Actions(actions=a)


def serve(wire: P.Wire) -> None:
  """Requests answered until Close, the end of the wire, or the first error (reported, then this process ends)."""
  from bench.referee.agent_api import AgentError
  host = Host()
  while True:
    try: seq, msg = wire.recv()
    except EOFError: return
    try:
      if (reply := host.answer(msg)) is None: return
      wire.send(reply, seq)
    except BaseException as e:  # report everything, then die: the referee records the reason
      kind = "interface" if isinstance(e, AgentError) else "exception"
      try: wire.send(P.Error(phase=msg.verb, kind=kind, message=P.text(f"{type(e).__name__}: {e}"),
                             traceback=P.text(traceback.format_exc(limit=20))), seq, timeout=10)
      except Exception: pass
      return


def _die_with_the_referee() -> None:
  """SIGKILL this process when its parent dies (the referee, or bwrap) instead of training on alone."""
  import signal

  from bench.referee.procs import die_with_parent
  die_with_parent(signal.SIGKILL)
  if os.getppid() == 1 and not os.environ.get("RLSPEEDRUN_SANDBOX"): os._exit(1)   # the referee died before prctl


def main() -> None:
  _die_with_the_referee()
  sock = socket.socket(fileno=int(sys.argv[1]))
  wire = P.Wire(sock, accept=P.REQUESTS)
  try: serve(wire)
  finally: wire.close()


if __name__ == "__main__":
  main()
