"""Many runs at once: `pytest bench/ --workers N` on this machine, `--ray auto|ADDRESS` on a Ray cluster (bench/ray_slots.py).

A *slot* is a place for one run at a time: cores of its own (every process of the run is pinned to them, and its
thread pools are told how many there are) and, on a GPU box, a device of its own (`AMD:0` ... `AMD:5`). Each slot is a
referee process of its own, `python -m bench.worker` pinned to the slot's cores (or a Ray actor on a node), doing what
the session's process does one run at a time: the untimed warm-up, then runs, each in a fresh sandboxed agent process
under the referee's clock. The session's process only schedules: every slot's warm-up of a pair and the pair's
cold-start run finish before its timed runs start; then each free slot takes the next seed. Records come back as runs
finish, saying where each ran and how many ran beside it (PROTOCOL.md section 14).

Cores are claimed with lock files (LOCK_DIR) held while a slot lives, so that two sessions on one machine, or two
Ray actors on one node, never pin runs to the same core.
"""
from __future__ import annotations

import collections
import fcntl
import os
import platform
import queue
import tempfile
import threading
import time

from bench import ROOT
from bench.referee.agent_api import AgentError
from bench.referee.config import known_fields
from bench.referee.procs import die_with_parent
from bench.referee.records import RunRecord
from bench.worker_client import WorkerClient, WorkerDied

LOCK_DIR = os.path.join(tempfile.gettempdir(), "rlspeedrun-cores")
# the thread pools of the agent's process, told how many cores its slot has (tinygrad's CPU kernels and its compile
# pool size themselves from NUM_CPU_THREADS; numpy's BLAS and torch's intra-op pool from the OpenMP-style variables)
THREAD_VARS = ("NUM_CPU_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RESTARTS = 1    # a slot whose referee process dies is replaced this many times per pair (then its seeds go to the others)


class PlacementError(ValueError):
  """Slots that cannot be placed as asked (more cores than there are, a device list that does not fit)."""


class SlotDied(Exception):
  """The slot's referee process (or Ray actor, or node) died; the message says how."""


def allowed_cores() -> list[int]:
  return sorted(os.sched_getaffinity(0))


def thread_env(n: int) -> dict[str, str]:
  return {k: str(n) for k in THREAD_VARS}


def pin_process(cores) -> None:
  """Every thread of this process (and so everything it starts from now on) onto `cores`."""
  for tid in os.listdir("/proc/self/task"):
    try: os.sched_setaffinity(int(tid), cores)
    except OSError: pass


class CoreLocks:
  """Cores claimed by this process through lock files in LOCK_DIR (released when it closes them or dies)."""
  def __init__(self):
    os.makedirs(LOCK_DIR, exist_ok=True)
    self.fds: dict[int, int] = {}

  def take(self, core: int) -> bool:
    fd = os.open(os.path.join(LOCK_DIR, f"cpu{core}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      os.close(fd)
      return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    self.fds[core] = fd
    return True

  def holder(self, core: int) -> str:
    try:
      with open(os.path.join(LOCK_DIR, f"cpu{core}.lock")) as f: return f.read().strip() or "?"
    except OSError: return "?"

  def take_all(self, cores) -> None:
    """Exactly these cores, or PlacementError naming the process that holds one."""
    for c in cores:
      if not self.take(c):
        pid = self.holder(c)
        self.close()
        raise PlacementError(f"core {c} is held by another rlspeedrun session or slot (pid {pid}, lock {LOCK_DIR}/cpu{c}.lock): "
                             "runs side by side never share a core; wait for it, or give this session other cores (taskset)")

  def take_free(self, n: int, cores) -> list[int]:
    """Any n free cores among `cores` (a Ray actor on its node), or PlacementError."""
    got = [c for c in cores if len(self.fds) < n and self.take(c)]
    if len(got) < n:
      self.close()
      raise PlacementError(f"{n} free cores wanted, {len(got)} free among {','.join(map(str, cores))} (others held: see {LOCK_DIR})")
    return got

  def close(self) -> None:
    for fd in self.fds.values(): os.close(fd)
    self.fds.clear()


def plan(workers: int, device: str | None, devices: list[str] | None = None, cores_per_run: int | None = None,
         cores: list[int] | None = None) -> list[dict]:
  """One placement per slot: a core set each (disjoint, `cores_per_run` each, default all of this process's cores shared
  out evenly) and a device each (`devices`; else on a GPU `DEV:i` for slot i; on the CPU, CPU)."""
  cores = allowed_cores() if cores is None else cores
  if devices:
    if workers not in (1, len(devices)):
      raise PlacementError(f"--workers {workers} with {len(devices)} --devices: give one or the other, or as many workers as devices")
    workers = len(devices)
  k = cores_per_run or len(cores) // workers
  if k < 1 or k * workers > len(cores):
    raise PlacementError(f"{workers} runs at once with {cores_per_run or 'at least 1'} cores each need {workers * max(k, 1)} cores; "
                         f"this process may use {len(cores)} ({','.join(map(str, cores))})")
  kind = (device or "CPU").split(":")[0].upper()
  if devices: devs = list(devices)
  elif kind == "CPU" or workers == 1: devs = [device] * workers
  elif ":" in device: raise PlacementError(f"--agent-device {device} names one device for {workers} runs at once: name one per run with --devices")
  else: devs = [f"{device}:{i}" for i in range(workers)]
  return [{"slot": i, "workers": workers, "cores": cores[i * k:(i + 1) * k], "device": devs[i]} for i in range(workers)]


def slot_referee(fields: dict, placement: dict) -> dict:
  """The referee's settings (RefereeConfig.to_json's fields) for the runs of one slot: its device, its placement
  (recorded with every run), and its agent's thread pools told how many cores it has."""
  return {**fields, "device": placement["device"], "placement": placement,
          "extra_env": {**fields.get("extra_env", {}), **thread_env(len(placement["cores"]))}}


def most_beside(span, others) -> int:
  """The most of `others` ([start, end or None] each) running at one instant of `span`: runs beside it, at worst."""
  a, b = span
  inside = [(s, e) for s, e in others if s < b and (e is None or e > a)]
  return max((sum(1 for s, e in inside if s <= t and (e is None or e > t)) for t in [a, *(s for s, _ in inside if s > a)]), default=0)


class LocalSlot:
  """A slot on this machine: a worker (`python -m bench.worker`) for one (agent, task), pinned to its cores before it starts."""
  def __init__(self, placement: dict, agent, task, referee, scratch: str):
    self.placement = {**placement, "scheduler": "local", "host": platform.node()}
    records = os.path.join(scratch, f"slot-{placement['slot']}-{time.monotonic_ns()}.jsonl")   # the worker's own copy
    cores = placement["cores"]
    def start() -> None:
      os.sched_setaffinity(0, cores)
      die_with_parent()
    self.client = WorkerClient(ROOT, agent, task, slot_referee(referee.to_json(), self.placement), records, before_exec=start,
                               name=f"the referee process of slot {placement['slot']}",
                               new_session=True)   # Ctrl-C reaches the session, which ends the slots itself

  def call(self, line: str) -> dict:
    try: return self.client.call(line)
    except WorkerDied as e: raise SlotDied(str(e)) from None

  def close(self) -> None: self.client.close(timeout=30, terminate=True)   # the worker ends its run and kills its agent


class SlotThread(threading.Thread):
  """A slot and the thread that talks to it: runs the lines it is given, one at a time, and posts each answer (or the
  exception) to the session's queue. The slot is made on the first line, in this thread."""
  def __init__(self, make, placement: dict, events: queue.Queue):
    super().__init__(daemon=True)
    self.make, self.placement, self.events, self.jobs = make, placement, events, queue.Queue()
    self.slot, self.closed = None, False
    self.start()

  def submit(self, line: str) -> None:
    self.jobs.put(line)

  def run(self) -> None:
    while (line := self.jobs.get()) is not None:
      try:
        if self.slot is None:
          self.slot = self.make(self.placement)
          if self.closed: return self.slot.close()     # closed while it started
        self.events.put((self, line, self.slot.call(line)))
      except Exception as e:     # SlotDied, or a slot that cannot start: the slot is gone
        self.events.put((self, line, e if isinstance(e, SlotDied) else SlotDied(f"{type(e).__name__}: {e}")))
        return

  def close(self) -> None:
    self.closed = True
    self.jobs.put(None)
    if self.slot is not None: self.slot.close()


class Pool:
  """The slots of a session and the schedule of one (agent, task) over them. `make(placement, agent, task, referee, scratch)`
  returns a slot (LocalSlot, RaySlot); `placements` are plan()'s."""
  def __init__(self, placements: list[dict], make, label: str = "local"):
    self.placements, self.make, self.label = placements, make, label

  def run_pair(self, pair, seeds: list[int], cold_seed: int | None) -> None:
    """The pair's warm-ups (every slot), its cold-start run (one slot, alone), then its timed runs side by side; each record
    goes to `pair.adopt` as it finishes (not to pytest-benchmark's timer: the test adds them in seed order). Raises
    AgentError when a warm-up fails (the pair's runs would all fail the same way) or no slot could start."""
    schedule = Schedule(self, pair)
    try:
      live = schedule.warm_ups()
      if cold_seed is not None: schedule.cold_start(live, cold_seed)
      schedule.timed_runs(live, seeds)
    finally:
      schedule.close()

  @staticmethod
  def _lost(pair, placement: dict, seed: int, role: str, reason: str) -> RunRecord:
    """The record of a run whose slot died under it: failed, with the reason (its training is lost with the slot)."""
    rec = RunRecord.start(pair.agent, pair.task, seed, role=role, kernel_cache="cold" if role == "cold-start" else "warm",
                          device=placement.get("device"))
    rec.placement = dict(placement)
    rec.finish_unsolved("failed", reason if reason.startswith("not run") else f"the slot running it died: {reason}", 0.0)
    return rec


class Schedule:
  """One pair's runs over a pool's slots, in three phases, each record adopted by the pair as it finishes with the most
  runs that ran beside it (`spans`: (seed, role) -> [start, end or None])."""
  def __init__(self, pool: Pool, pair):
    self.pool, self.pair, self.events = pool, pair, queue.Queue()
    self.threads = [SlotThread(self.make, p, self.events) for p in pool.placements]
    self.restarts: collections.Counter = collections.Counter()
    self.spans: dict[tuple, list] = {}
    self.died: list[str] = []

  def make(self, placement: dict):
    return self.pool.make(placement, self.pair.agent, self.pair.task, self.pair.config, self.pair.workdir)

  def wait(self) -> tuple:
    while True:
      try: return self.events.get(timeout=0.5)
      except queue.Empty: continue

  def warm_ups(self) -> list[SlotThread]:
    """Every slot's warm-up at once; one that fails fails the pair (its agent breaks the same way everywhere)."""
    for t in self.threads: t.submit("warm-up")
    live, errors = [], []
    for _ in list(self.threads):
      t, _, rep = self.wait()
      if isinstance(rep, SlotDied): self.died.append(str(rep))
      elif "error" in rep: errors.append(rep["error"])
      else: live.append(t)
    if errors: raise AgentError(errors[0])
    if not live: raise AgentError(f"{self.pair.agent.name} on {self.pair.task.name}: no slot could start ({self.pool.label}): {self.died[0]}")
    return sorted(live, key=lambda t: t.placement["slot"])

  def cold_start(self, live: list[SlotThread], seed: int) -> None:
    """Alone: no run beside it, its compile on its slot's cores."""
    self.spans[(seed, "cold-start")] = [time.monotonic(), None]
    live[0].submit(f"cold {seed}")
    t, _, rep = self.wait()
    self.finish(t, "cold-start", seed, rep)
    if isinstance(rep, SlotDied): live.remove(t)

  def timed_runs(self, live: list[SlotThread], seeds: list[int]) -> None:
    """Each free slot takes the next seed; a slot whose referee dies is replaced (RESTARTS per place), and when every
    slot is gone the seeds left are recorded as lost, with the last reason."""
    todo, idle, busy, warming = collections.deque(seeds), list(live), {}, set()
    while todo or busy:
      if not idle and not busy and not warming:
        for s in todo:
          self.spans[(s, "timed")] = [time.monotonic(), None]
          last = self.died[-1] if self.died else "?"
          self.finish(None, "timed", s, SlotDied(f"not run: every slot was lost ({self.pool.label}); the last: {last}"))
        return
      while todo and idle:
        t, seed = idle.pop(0), todo.popleft()
        self.spans[(seed, "timed")], busy[t] = [time.monotonic(), None], seed
        t.submit(f"run {seed}")
      t, _, rep = self.wait()
      if t in warming:               # a replacement slot is ready (or not)
        warming.discard(t)
        if isinstance(rep, dict) and "ok" in rep: idle.append(t)
        else: self.died.append(str(rep.get("error") if isinstance(rep, dict) else rep))
        continue
      self.finish(t, "timed", busy.pop(t), rep)
      if not isinstance(rep, SlotDied):
        idle.append(t)
        continue
      self.died.append(str(rep))
      if self.restarts[t.placement["slot"]] < RESTARTS:      # a new referee process (or actor) in the same place
        self.restarts[t.placement["slot"]] += 1
        self.threads.append(fresh := SlotThread(self.make, t.placement, self.events))
        warming.add(fresh)
        fresh.submit("warm-up")

  def finish(self, t: SlotThread | None, role: str, seed: int, rep: dict | SlotDied) -> None:
    span = self.spans[(seed, role)]
    span[1] = time.monotonic()
    beside = most_beside(span, [v for k, v in self.spans.items() if k != (seed, role)])
    # the slot's own placement (a Ray actor's node and cores) once it started; none for a run that never got one
    where = {"workers": len(self.pool.placements)} if t is None else getattr(t.slot, "placement", None) or t.placement
    if isinstance(rep, SlotDied): rec = Pool._lost(self.pair, where, seed, role, str(rep))
    elif "record" not in rep: rec = Pool._lost(self.pair, where, seed, role, f"its slot answered {rep}")
    else: rec = RunRecord(**known_fields(RunRecord, rep["record"]))
    rec.placement = {**(rec.placement or where), "beside": beside}    # the most other runs at once during it
    self.pair.adopt(rec, timer=False)

  def close(self) -> None:
    for t in self.threads: t.close()
