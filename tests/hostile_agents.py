"""Hostile entries: each tries one attack on the referee that a bounty hunter could try (issue 10).
They build on tests/fake_agents.Scripted (learns CartPole after 2 updates, no tinygrad), so that a run that
is not stopped would be *solved*. An attack that finds something it should not raises `Escaped` with what it
found, so that the run's failure reason says which door was open."""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from tests.fake_agents import Scripted, good_policy

MARKER = "rlspeedrun-hostile-daemon-7f3a"     # in the command line of every process a hostile agent leaves behind


class Escaped(Exception):
  """An attack got through (the tests expect never to see this)."""


def _burn(seconds: float) -> None:
  end = time.thread_time() + seconds
  while time.thread_time() < end: pass


def _socket_fd() -> int:
  return int(sys.argv[1])        # bench.referee.agent_host's command line names its end of the referee's socket


# --- 1. code execution in the referee, and replies the referee cannot read ---
class ObjectActions(Scripted):
  """act() returns an object array (under pickle, a reply that failed to unpickle ended the session)."""
  def act(self, obs): return np.array([object()] * len(obs), dtype=object)


class _Boom:
  def __init__(self, path): self.path = path
  def __reduce__(self): return (open, (self.path, "w"))   # under pickle: runs in whoever unpickles it


class PickleOnTheWire(Scripted):
  """Writes a pickle whose unpickling creates $HOSTILE_MARKER_FILE straight onto the referee's socket."""
  def train(self):
    payload = pickle.dumps(("trained", 10**6, _Boom(os.environ["HOSTILE_MARKER_FILE"])))
    os.write(_socket_fd(), struct.pack("!i", len(payload)) + payload)   # multiprocessing.Connection's framing
    os.write(_socket_fd(), struct.pack("<Q", len(payload)) + payload)   # the referee's framing, pickle inside
    yield from super().train()


class ForgedReply(Scripted):
  """Sends a well-formed reply the referee did not ask for (a 'trained' with a million steps) before the real one."""
  def train(self):
    from bench.referee import protocol as P
    frame = P.encode(P.Trained(finished=False, agent_steps=10**6, counted_steps=10**6, profile={}), 10**6)
    os.write(_socket_fd(), struct.pack("<Q", len(frame)) + frame)
    yield from super().train()


class HugeReply(Scripted):
  """Announces a 1 GiB reply (under pickle the referee read it all: 2 GB of memory)."""
  def train(self):
    os.write(_socket_fd(), struct.pack("<Q", 2**30))
    os.write(_socket_fd(), b"\0" * 4096)
    time.sleep(30)
    yield 1


# --- 2. rewriting results; 4. escaping the run ---
class Snooper(Scripted):
  """Looks for every door out of its run: the referee's and other processes, the results directory, the
  project's files, the network. Raises Escaped naming the doors that were open."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    found, me = [], os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
      try:
        with open(f"/proc/{pid}/cmdline", "rb") as f: cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
      except OSError: continue
      if int(pid) != me and "pytest" in cmd and "bwrap" not in cmd:     # the referee (not the sandbox's init)
        found.append(f"sees process {pid}: {cmd[:80]}")
        try:
          with open(f"/proc/{pid}/mem", "rb"): found.append(f"opens /proc/{pid}/mem")
        except OSError: pass
        try: os.kill(int(pid), 0); found.append(f"can signal {pid}")
        except OSError: pass
    results = os.environ.get("HOSTILE_RESULTS_DIR")
    if results and os.path.isdir(results) and os.listdir(results): found.append(f"sees the results in {results}")
    if results and os.path.exists(os.path.join(results, "runs.jsonl")): found.append("sees runs.jsonl")
    for path in (os.path.join(results or "/nonexistent", "runs.jsonl"), os.path.abspath(__file__)):
      try:
        with open(path, "a"): found.append(f"writes {path}")
      except OSError: pass
    import socket
    port = os.environ.get("HOSTILE_PORT")     # a listener the test opened on the machine's loopback
    try: socket.create_connection(("127.0.0.1", int(port)), timeout=1).close(); found.append("reaches the machine's network")
    except (OSError, TypeError): pass
    if found: raise Escaped("; ".join(found))


class Daemon(Scripted):
  """Leaves a process that outlives its run, in a session of its own (setsid), meant to SIGSTOP later runs."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", MARKER], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- 3. training while the clock is stopped (issue 26) ---
class LearnsInAct(Scripted):
  """Never learns in train(): its act() learns from the referee's evaluation episodes instead, in many short calls (1 ms
  of work each, under the old 2 ms allowance), and answers well from its 30th call on. In the training process (the old
  referee) its train() would have met a policy the evaluations taught; here act() runs in an evaluator, and what it
  learns reaches neither the training process nor the fresh evaluator of a confirmation."""
  updates_to_learn = 10**9

  def __init__(self, task, seed):
    super().__init__(task, seed)
    self.calls = 0

  def act(self, obs):
    _burn(0.001)
    self.calls += 1
    return good_policy(obs) if self.calls >= 30 else super().act(obs)


class BurnsInItsEvaluator(Scripted):
  """Learns within one evaluation as hard as it can: 0.2 CPU-s of work in every act() call (in its evaluator)."""
  def act(self, obs):
    _burn(0.2)
    return super().act(obs)


class TrainsBetweenRequests(Scripted):
  """Trains in a thread of its own (issue 26: the reference PPO in a thread, each train() request answered after one step
  of it) while train() yields at once: the thread works whenever the process is not stopped. It reports the thread's CPU
  time (`profile.thread_cpu_s`), which the referee's freezer bounds by the clock. It passes every regular evaluation but no
  confirmation (like fake_agents.LuckyPass), so that it is evaluated again and again: seconds off the clock."""
  train_sleep_s = 0.001

  def __init__(self, task, seed):
    super().__init__(task, seed)
    self.profile = {"thread_cpu_s": 0.0}
    threading.Thread(target=self._work, daemon=True).start()

  def _work(self):
    while True:
      _burn(0.002)
      self.profile["thread_cpu_s"] = time.thread_time()
      time.sleep(0)

  def act(self, obs):
    if len(obs) == self.task.confirm_episodes: return np.zeros(len(obs), dtype=np.int64)
    return super().act(obs)


class WorksWhileFrozen(Scripted):
  """Two processes of its own (not threads) that burn CPU all the time, started in a new session, and passes every
  regular evaluation but no confirmation (like fake_agents.LuckyPass), so that it is evaluated again and again."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    for _ in range(2): subprocess.Popen([sys.executable, "-c", "while True: pass", MARKER], stdin=subprocess.DEVNULL, start_new_session=True)

  def act(self, obs):
    if len(obs) == self.task.confirm_episodes: return np.zeros(len(obs), dtype=np.int64)
    return super().act(obs)


class EvaluatorFeedsTrainer(Scripted):
  """Its evaluator writes what it learned where the training process might read it (HOME, the working directory, /tmp,
  /dev/shm); its training process looks there before every update and raises Escaped if it finds anything."""
  PLACES = ("~/learned", "learned", "/tmp/learned", "/dev/shm/learned")

  def act(self, obs):
    for p in self.PLACES:
      try:
        with open(os.path.expanduser(p), "w") as f: f.write(f"{os.getpid()}")
      except OSError: pass
    return super().act(obs)

  def train(self):
    for steps in super().train():
      for p in self.PLACES:
        try:
          with open(os.path.expanduser(p)) as f: pid = f.read()
        except OSError: continue
        if pid != str(os.getpid()): raise Escaped(f"found what its evaluator (pid {pid}) wrote at {p}")
      yield steps


class FeignsASharedMachine(Scripted):
  """Slow on purpose, and wants the slowness blamed on the machine (a `contended` run is never called a regression):
  during each update it runs three CPU-burning processes of its own, so that its threads wait for a core, and stops
  them before train() yields (so that no evaluation sees them)."""
  train_sleep_s = 0.0

  def train(self):
    for steps in super().train():
      hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass", MARKER], stdin=subprocess.DEVNULL) for _ in range(3)]
      _burn(0.4)
      for h in hogs: h.kill(); h.wait()
      yield steps


class SmugglesFiles(Scripted):
  """In the warm-up, leaves 'weights' wherever a later run might look (HOME, the working directory, beside the
  kernel cache, /tmp); a timed run that finds any of them raises Escaped."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    places = {os.path.expanduser("~"), os.getcwd(), os.path.dirname(os.environ.get("CACHEDB", "/nonexistent/x")), "/tmp"}
    found = [p for p in places if os.path.exists(os.path.join(p, "weights.npy"))]
    if found: raise Escaped(f"found smuggled weights in {found}")
    for p in places:
      try: np.save(os.path.join(p, "weights.npy"), np.ones(4))
      except OSError: pass


class SmugglesInCache(Scripted):
  """Adds a table of its own to the kernel cache in the warm-up (weights for the timed runs)."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    import sqlite3
    con = sqlite3.connect(os.environ["CACHEDB"])
    con.execute("CREATE TABLE IF NOT EXISTS weights (key text, val blob)")
    con.execute("INSERT INTO weights VALUES ('w', ?)", (np.ones(4).tobytes(),))
    con.commit()
    con.close()


class PicklesInCache(Scripted):
  """Hides a pickle that runs code into a table named like tinygrad's compiler cache."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    import sqlite3
    con = sqlite3.connect(os.environ["CACHEDB"])
    con.execute("CREATE TABLE IF NOT EXISTS compile_clang_jit_22 (key text, val blob, PRIMARY KEY (key))")
    con.execute("REPLACE INTO compile_clang_jit_22 VALUES ('k', ?)", (pickle.dumps(_Boom("/tmp/rlspeedrun-boom")),))
    con.commit()
    con.close()


class StoresWeightsInTheCache(Scripted):
  """Issue 25: in the warm-up (its seed is 1,000,000 or more) it stores 'weights' with tinygrad's own diskcache_put in
  the compiler's table, under a key that is a valid kernel source (so a structural check passes it: before the
  rebuild, a timed run read them back and solved in 0.05 s). A timed run that finds them raises Escaped."""
  KEY = "void weights(void) { }"

  def __init__(self, task, seed):
    super().__init__(task, seed)
    from tinygrad import Device
    from tinygrad.helpers import diskcache_get, diskcache_put
    table = Device[Device.DEFAULT].compiler.cachekey
    if seed >= 1_000_000: diskcache_put(table, self.KEY, b"WEIGHTS" * 1000)
    elif b"WEIGHTS" in (diskcache_get(table, self.KEY) or b""): raise Escaped("read the warm-up's weights back from the kernel cache")


class HandWrittenController(Scripted):
  """Issue 25: no learning at all: a hand-written controller behind 16,384 real, counted random-action steps (it
  scored 582x 'faster' than PPO, unflagged). Solves at its first evaluation; the referee flags it for review."""
  steps_per_update, updates_to_learn = 16_384, 1

  def train(self):
    rng = np.random.default_rng(self.seed)
    for _ in range(self.steps_per_update // 4): self.envs.step(rng.integers(0, 2, 4))
    self.updates = 1
    yield self.steps_per_update
    while True: yield self.steps_per_update


class ForkBomb(Scripted):
  """Forks sleeping children until the system says no; raises Escaped if it got more than $HOSTILE_MAX (+ a few)."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    kids = []
    try:
      for _ in range(int(os.environ.get("HOSTILE_MAX", "64")) * 4):
        pid = os.fork()
        if pid == 0:
          time.sleep(60)
          os._exit(0)
        kids.append(pid)
    except OSError: pass
    finally:
      for k in kids: os.kill(k, 9); os.waitpid(k, 0)
    if len(kids) > int(os.environ.get("HOSTILE_MAX", "64")): raise Escaped(f"forked {len(kids)} processes")


# --- 5. fake progress ---
class ReturnsAtOnce(Scripted):
  """train() returns without training; act() then answers with a hard-coded controller."""
  def train(self):
    self.updates = 10
    return
    yield


class ForgesSteps(Scripted):
  """Steps its envs through the task, then overwrites the step counter to report half the real steps."""
  def train(self):
    from envs.counting import STEPS
    for steps in super().train():
      STEPS.count = steps // 2
      yield steps // 2


class ForgesFingerprint(Scripted):
  """Claims another tinygrad version (the old referee took the fingerprint's version from the agent's process)."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    import tinygrad
    tinygrad.__version__ = "9.9.9"


# --- 6. resources ---
class MemoryHog(Scripted):
  def __init__(self, task, seed):
    super().__init__(task, seed)
    self.hog = np.ones(3 * 2**30 // 8)        # 3 GiB


class SlowAct(Scripted):
  """act() takes 20 ms a call: its evaluations are slow (off the clock: the session waits, the verdict does not)."""
  def act(self, obs):
    time.sleep(0.02)
    return good_policy(obs) if self.updates >= self.updates_to_learn else np.zeros(len(obs), dtype=np.int64)


class LeavesItsCores(Scripted):
  """Run side by side with others, pinned to its own cores: widens its CPU affinity to every core of the machine during
  training, to take its neighbours' cores (bench/parallel.py)."""
  def train(self):
    for steps in super().train():
      os.sched_setaffinity(0, range(os.cpu_count()))
      yield steps


# --- issue 25: root in the sandbox ---
class RootInTheSandbox(Scripted):
  """What root's capabilities did in the sandbox before it dropped them: remount `/` read-write, unmount the empty
  directory over the results ($HOSTILE_HIDDEN, under the entry's own bound directory), write a root-owned file, take
  uid 0 back, and the same again in a user namespace of its own. Raises Escaped naming what worked."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    found, hidden = [], os.environ.get("HOSTILE_HIDDEN", "/nonexistent")
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
      if int(status[cap], 16): found.append(f"{cap} {status[cap].strip()}")
    if os.getuid() == 0 or os.geteuid() == 0: found.append("runs as uid 0")
    if os.getgroups(): found.append(f"supplementary groups {os.getgroups()}")

    def attempts(where: str):
      if libc.mount(b"none", b"/", None, 32 | 4096, None) == 0: found.append(f"remounts / read-write ({where})")  # MS_REMOUNT|MS_BIND
      if libc.umount2(hidden.encode(), 2) == 0: found.append(f"unmounts what covers {hidden} ({where})")          # MNT_DETACH
      if os.path.isdir(hidden) and os.listdir(hidden): found.append(f"sees {os.listdir(hidden)} in {hidden} ({where})")
      for path in (os.path.abspath(__file__), "/usr/bin/bwrap", "/etc/passwd"):
        try:
          with open(path, "a"): found.append(f"writes {path} ({where})")
        except OSError: pass
      try: os.setuid(0); found.append(f"takes uid 0 ({where})")
      except OSError: pass
    attempts("as it starts")
    if libc.syscall(0x40000000 + 272, 0x10000000) == 0: found.append("makes a user namespace through the x32 ABI")
    if libc.unshare(0x10000000 | 0x00020000) == 0:     # CLONE_NEWUSER | CLONE_NEWNS: every capability, in a namespace of its own
      found.append("makes a user namespace of its own (the kernel's namespaced code within its reach)")
      attempts("in a user namespace of its own")
    if found: raise Escaped("; ".join(found))


# --- issue 25: agent data that could hurt the referee ---
class EscapesInItsError(Scripted):
  """Raises with terminal escape sequences (clear the line, write a solve), a NUL and a lone surrogate in its message."""
  def train(self):
    yield 100
    raise RuntimeError("\x1b[2K\r[x · y · seed 0 · warm cache] solved in 0.42 s\x00\ud800\u202e")


class EscapesOnTheWire(Scripted):
  """Sends an Error reply whose message carries an escape sequence straight onto the socket (past bench.referee.agent_host's own
  escaping): the referee's check at the wire must refuse it."""
  def train(self):
    import socket

    from bench.referee import protocol as P
    sock = socket.socket(fileno=os.dup(_socket_fd()))
    frame = P.encode(P.Error(phase="train", kind="exception", message="\x1b[2Kok", traceback=""), 1)   # JSON: "\u001b[2Kok"
    sock.sendall(struct.pack("<Q", len(frame)) + frame)
    time.sleep(30)
    yield 0


class SourcesEverywhere(Scripted):
  """Its directory (the test's) holds a sparse 2 GiB file and a link to a file outside it: the referee, choosing what it
  hashes, reads neither."""
