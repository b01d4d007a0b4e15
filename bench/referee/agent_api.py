"""The agent interface, how an agent is named on the command line, and the checks on what it returns.

An agent is one class:

    class MyAgent:
        def __init__(self, task: envs.Task, seed: int): ...
            # build envs with task.make_vec(n) / task.make_env() so the referee counts env steps
        def train(self) -> Iterator[int]: ...
            # a generator: yield the cumulative number of env steps after each update
        def act(self, obs: np.ndarray) -> np.ndarray: ...
            # greedy/deterministic actions for a batch of observations (batch size varies),
            # answered by an evaluator process restored from a snapshot of this one (off the clock)
        def snapshot(self) -> dict[str, np.ndarray]: ...     # optional: what act() reads besides
        def restore(self, state: dict[str, np.ndarray]): ... # the agent's tinygrad Tensors, and back

Optionally `self.profile: dict[str, float]`, reported into the run record (where the time went), and, at the top
level of the agent's file, the tinygrad settings its processes run with (`declared_settings` below):

    TINYGRAD_SETTINGS = {"SPEC": "0", "CPU": {"HCQ2": "1"}, "Pendulum-v1@CPU": {"HCQ2": "0"}}   # narrower wins
The referee owns the clock and the evaluation; the agent never sees evaluation seeds or envs. The
agent runs in a sandboxed process and talks to the referee in the messages of bench/referee/protocol.py
(PROTOCOL.md section 12).
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import stat
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from bench.referee import protocol


class AgentError(Exception):
  """The agent broke the interface (wrong method, action shape, dtype, non-finite values...)."""


@dataclass(frozen=True)
class AgentSpec:
  name: str      # what records and tables call it
  target: str    # "package.module:Class" or "path/to/file.py:Class"
  source: str    # the file that defines it
  preload: tuple[str, ...] = ()   # libraries imported before the clock starts (a peer's torch); only the referee sets it
  kind: str = "entry"             # "reference" (agents/), "peer" (bench/peers/) or "entry"; recorded in each run

  @property
  def source_sha256(self) -> str:
    return _file_sha256(self.source, [MAX_FILE_BYTES])


SETTINGS_NAME = "TINYGRAD_SETTINGS"
# tinygrad's own variables an agent may declare: each changes how fast tinygrad runs the same computation, none what the
# referee owns (DEV, the kernel cache, its placement's NUM_CPU_THREADS, DEBUG's output); value: why it is allowed
ALLOWED_SETTINGS: dict[str, str] = {
  "HCQ2": "a captured graph replayed by one compiled submitter (CPU): fewer Python dispatches per replay",
  "SPEC": "tinygrad's self-checks of its graphs (0: off)",
  "TRACEMETA": "source locations kept on each graph node (0: off), read at import",
  "THREADS": "CPU kernels split over threads (0: one thread a kernel)",
  "PARALLEL": "compile worker processes that lower kernels (0: in the agent's process)",
  "BEAM": "kernel search (on the clock: the referee keeps no search result across runs, PROTOCOL.md section 4)",
  "JITBEAM": "kernel search for jitted graphs only (on the clock, as BEAM)",
  "NOOPT": "no hand-coded kernel optimizations",
  "SPLIT_REDUCEOP": "large reductions split in two kernels",
  "JIT_BATCH_SIZE": "kernels per batch of a device graph",
}
SETTING_VALUE = r"[0-9]{1,3}"     # every allowed variable is a small integer


def declared_settings(source: str, task: str, device: str | None = "CPU") -> dict[str, str]:
  """The tinygrad settings an agent's file declares for `task` on `device`: its top-level `TINYGRAD_SETTINGS`, a literal
  dict whose items are VARIABLE: value (everywhere) or SCOPE: {VARIABLE: value, ...}, where a scope is a device ("CPU",
  "AMD": DEV's part before ':'), a task ("CartPole-v1") or both ("CartPole-v1@CPU"); a narrower scope wins (everywhere <
  device < task < task@device). Read from the file's syntax tree, not by running it: the referee never executes an
  entry's code outside its sandbox. AgentError names what is wrong: not a literal dict, a variable outside
  ALLOWED_SETTINGS (in any scope), a value that is not a small integer."""
  try:
    with open(source, "rb") as f: tree = ast.parse(f.read(MAX_FILE_BYTES), source)
  except (OSError, SyntaxError, ValueError): return {}   # the import in the agent's process then fails with its own message
  nodes = [n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)) and
           any(isinstance(t, ast.Name) and t.id == SETTINGS_NAME for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
  if not nodes or nodes[-1].value is None: return {}
  where = f"{os.path.basename(source)}:{nodes[-1].lineno} {SETTINGS_NAME}"
  try: declared = ast.literal_eval(nodes[-1].value)
  except ValueError: raise AgentError(f"{where} must be a literal dict (the referee reads it without running the file)") from None
  if not isinstance(declared, dict): raise AgentError(f"{where} must be a dict, not {type(declared).__name__}")
  scopes = {"": {k: v for k, v in declared.items() if not isinstance(v, dict)}, **{k: v for k, v in declared.items() if isinstance(v, dict)}}
  for name, value in ((k, v) for scope in scopes.values() for k, v in scope.items()):
    if name not in ALLOWED_SETTINGS:
      raise AgentError(f"{where}: {name!r} is not a tinygrad setting an agent may declare (allowed: {', '.join(ALLOWED_SETTINGS)})")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(SETTING_VALUE, str(value)):
      raise AgentError(f"{where}: {name}={value!r} is not a small integer (as tinygrad reads it: 0, 1, 2, ...)")
  dev = (device or "").split(":")[0].upper()
  out: dict[str, str] = {}
  for scope in dict.fromkeys(("", dev, task, f"{task}@{dev}")):
    out.update({k: str(v) for k, v in scopes.get(scope, {}).items()})
  return out


def applied_settings(agent: AgentSpec, task: str, device: str | None = "CPU",
                     environ: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
  """(declared, applied): what the agent's file declares for `task` on `device`, and what of it the referee sets in the
  agent's processes, which is all of it but a variable the session sets itself (`HCQ2=0 pytest bench/` measures a
  reference without its HCQ2; the record's tinygrad_env says what ran). Peers declare nothing: their file is the
  project's adapter."""
  if agent.kind == "peer": return {}, {}
  environ = os.environ if environ is None else environ
  declared = declared_settings(agent.source, task, device or environ.get("DEV"))
  return declared, {k: v for k, v in declared.items() if k not in environ}


ENTRY_POINT_GROUP = "rlspeedrun.agents"


def installed_agents() -> dict[str, str]:
  """Agents that installed packages register under the entry point group `rlspeedrun.agents`
  (pyproject.toml: [project.entry-points."rlspeedrun.agents"] my-ppo = "my_pkg.agent:MyPPO")."""
  from importlib.metadata import entry_points
  return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_agent(spec: str) -> AgentSpec:
  """How an agent is named: 'ppo' (a reference or peer), 'my-ppo' (an installed entry point),
  'package.module:Class', 'path/to/file.py:Class', any of these as 'NAME=...' to choose the name
  that records and reports use. References and peers cannot be shadowed by an installed entry."""
  from agents import REFERENCE_AGENTS
  from bench.peers import PEER_AGENTS, PEER_PRELOAD
  alias = None
  if "=" in spec:
    alias, spec = (part.strip() for part in spec.split("=", 1))
    if not alias or not spec: raise AgentError(f"agent {alias}={spec}: expected NAME=AGENT")
    if alias in REFERENCE_AGENTS or alias in PEER_AGENTS:
      raise AgentError(f"agent name {alias!r} is taken by a reference/peer agent: choose another")
  known = {**installed_agents(), **REFERENCE_AGENTS, **PEER_AGENTS}
  name, target = (spec, known[spec]) if spec in known else (None, spec)
  if ":" not in target:
    raise AgentError(f"unknown agent {spec!r}: use a known name ({', '.join(sorted(known))}), "
                     "'package.module:Class' or 'path/to/file.py:Class'")
  where, cls = target.rsplit(":", 1)
  if where.endswith(".py"):
    if not os.path.isfile(where): raise AgentError(f"agent {spec!r}: no such file {where!r}")
    source = os.path.abspath(where)
    target = f"{source}:{cls}"
  else:
    try: found = importlib.util.find_spec(where)
    except (ImportError, ValueError): found = None
    if found is None or found.origin is None: raise AgentError(f"agent {spec!r}: cannot find module {where!r}")
    source = found.origin
  kind = "reference" if target in REFERENCE_AGENTS.values() else "peer" if target in PEER_AGENTS.values() else "entry"
  peer = next((k for k, v in PEER_AGENTS.items() if v == target), None)
  return AgentSpec(name=alias or name or cls, target=target, source=source, preload=PEER_PRELOAD.get(peer, ()), kind=kind)


SOURCE_DIRS = ("agents", "bench", "envs")    # the project's code that a run executes (its referee, references, tasks)
SKIP_DIRS = ("__pycache__", "node_modules")  # in the project's code, and any directory whose name starts with '.' (.git, .venv)
MAX_FILE_BYTES = 16 * 2**20                  # a file over this is listed with its size, not hashed
MAX_TOTAL_BYTES = 256 * 2**20                # bytes hashed for one record, all files together
MAX_FILES = 4096                             # files listed for one record


def hash_sources(entry_dir: str, project: str, skip: tuple[str, ...] = ()) -> dict[str, str]:
  """SHA-256 of the files a run's code came from, chosen by the referee (never named by the agent): every regular file
  under the entry's own source directory (all of it: what the agent can read, but its __pycache__ directories, which
  its sandbox covers), and the project's code (SOURCE_DIRS). Links are not followed (a link is listed as where it
  points), nothing under `skip` (the results) is read, files are read in chunks, and the files, directories and bytes
  are bounded (what is over a bound is listed with the reason, not read)."""
  out, budget, walked = {}, [MAX_TOTAL_BYTES], 0
  entry = os.path.realpath(entry_dir)
  skip = tuple(os.path.realpath(p) for p in skip)
  for top in dict.fromkeys([entry, *(os.path.realpath(os.path.join(project, d)) for d in SOURCE_DIRS)]):
    for dirpath, dirnames, filenames in os.walk(top):    # os.walk follows no link to a directory: listed below as one
      walked += 1
      keep = (lambda d: d != "__pycache__") if top == entry else (lambda d: not d.startswith(".") and d not in SKIP_DIRS)
      dirnames[:] = sorted(d for d in dirnames if keep(d) and os.path.join(dirpath, d) not in skip)
      links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
      for name in sorted(filenames + links):
        if len(out) >= MAX_FILES or walked > MAX_FILES:
          out["..."] = f"more than {MAX_FILES} files or directories under {top}: the rest not listed"
          return out
        path = os.path.join(dirpath, name)
        if path not in out: out[path] = _file_sha256(path, budget)
  return out


def _file_sha256(path: str, budget: list[int]) -> str:
  """The file's SHA-256, or why it was not read (a link, not a regular file, over a bound, unreadable)."""
  try: st = os.lstat(path)
  except OSError as e: return f"not read: {e.strerror}"
  if stat.S_ISLNK(st.st_mode): return f"link to {protocol.printable(os.readlink(path))[:200]}: not followed"
  if not stat.S_ISREG(st.st_mode): return "not a regular file: not read"
  if st.st_size > MAX_FILE_BYTES: return f"{st.st_size:,} bytes, over {MAX_FILE_BYTES:,}: not read"
  if st.st_size > budget[0]: return f"{st.st_size:,} bytes, over what is left of the record's {MAX_TOTAL_BYTES:,}: not read"
  h, n = hashlib.sha256(), 0
  try:
    with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb", buffering=0) as f:
      now = os.fstat(f.fileno())
      if now.st_ino != st.st_ino or not stat.S_ISREG(now.st_mode): return "replaced while read: not read"
      while n <= MAX_FILE_BYTES and (chunk := f.read(1 << 20)):
        h.update(chunk)
        n += len(chunk)
  except OSError as e: return f"not read: {e.strerror}"
  budget[0] -= n
  return h.hexdigest() if n <= MAX_FILE_BYTES else f"grew over {MAX_FILE_BYTES:,} bytes while read: not hashed"


def load_agent_class(target: str) -> type:
  """Import the class named by an AgentSpec.target (done in the agent's process, on the clock) and check its shape."""
  from agents import load_class
  try: cls = load_class(target)
  except AttributeError as e: raise AgentError(str(e)) from None
  check_agent_class(cls)
  return cls


def check_agent_class(cls) -> None:
  if not inspect.isclass(cls): raise AgentError(f"{cls!r} is not a class")
  missing = [m for m in ("train", "act") if not callable(getattr(cls, m, None))]
  if missing: raise AgentError(f"agent class {cls.__name__} lacks method(s): {', '.join(missing)}")
  if not inspect.isgeneratorfunction(cls.train):
    raise AgentError(f"{cls.__name__}.train() must be a generator: `yield` the cumulative env steps after each update (PROTOCOL.md section 8)")
  try: inspect.signature(cls).bind(object(), 0)
  except TypeError as e: raise AgentError(f"agent class {cls.__name__} must be constructible as {cls.__name__}(task, seed): {e}") from None


def check_actions(actions, space: gym.Space, n: int) -> np.ndarray:
  """Validate a batch of `n` actions for `space`; returns them as an array ready for env.step."""
  try: a = np.asarray(actions)
  except Exception as e: raise AgentError(f"act() returned {type(actions).__name__}, not an array: {e}") from None
  if isinstance(space, gym.spaces.Discrete):
    if a.shape != (n,): raise AgentError(f"act() returned shape {a.shape}, expected ({n},) for {n} observations")
    if a.dtype.kind == "f":
      if not np.isfinite(a).all(): raise AgentError("act() returned non-finite actions (NaN/inf)")
      raise AgentError(f"act() returned dtype {a.dtype}; a Discrete space needs integer actions (return actions.astype(np.int64))")
    if a.dtype.kind not in "iu":
      raise AgentError(f"act() returned dtype {a.dtype}; a Discrete space needs integer actions (return actions.astype(np.int64))")
    lo = int(space.start)
    if (a < lo).any() or (a >= lo + int(space.n)).any():
      raise AgentError(f"act() returned actions outside [{lo}, {lo + int(space.n) - 1}]")
    return a.astype(np.int64)
  if isinstance(space, gym.spaces.Box):
    if a.shape != (n, *space.shape):
      raise AgentError(f"act() returned shape {a.shape}, expected {(n, *space.shape)}")
    if a.dtype.kind not in "fiu": raise AgentError(f"act() returned dtype {a.dtype}; a Box space needs numbers")
    if not np.isfinite(a).all(): raise AgentError("act() returned non-finite actions (NaN/inf)")
    return np.clip(a, space.low, space.high).astype(space.dtype)
  if len(a) != n or not all(space.contains(x) for x in a):
    raise AgentError(f"act() returned actions that are not in {space}")
  return a
