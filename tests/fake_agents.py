"""Agents with known behaviour, for testing the referee (no learning, no tinygrad).

`Scripted` "learns" instantly: after `updates_to_learn` updates its act() switches from a bad policy
(always push left) to a hand-written controller that balances CartPole for 500 steps on every seed.
Each subclass breaks one rule."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np


def good_policy(obs: np.ndarray) -> np.ndarray:
  return (obs[:, 0] * 0.1 + obs[:, 1] * 0.5 + obs[:, 2] * 10 + obs[:, 3] * 2 > 0).astype(np.int64)


class Scripted:
  steps_per_update = 1000
  updates_to_learn = 2
  train_sleep_s = 0.0     # sleep per update, inside train(): counted by the clock
  act_sleep_s = 0.0       # sleep per act() call: evaluation, not counted

  def __init__(self, task, seed):
    self.task, self.seed, self.updates = task, seed, 0
    self.envs = task.make_vec(4, vectorization_mode="sync")
    self.obs, _ = self.envs.reset(seed=seed)

  def train(self):
    steps = 0
    while True:
      for _ in range(self.steps_per_update // 4):   # balanced: no episode ends in the first 2000 steps
        self.obs = self.envs.step(good_policy(self.obs))[0]
      steps += self.steps_per_update
      if self.train_sleep_s: time.sleep(self.train_sleep_s)
      self.updates += 1
      yield steps

  def act(self, obs):
    if self.act_sleep_s: time.sleep(self.act_sleep_s)
    if self.updates >= self.updates_to_learn: return good_policy(obs)
    return np.zeros(len(obs), dtype=np.int64)

  def snapshot(self) -> dict:
    """What act() reads (no tinygrad Tensors here): the evaluator's copy restores it."""
    return {"updates": np.array(self.updates)}

  def restore(self, state: dict) -> None:
    self.updates = int(state["updates"])


class SleepyTrainer(Scripted):
  """Known training time: 4 updates x 0.25 s; evaluation made slow on purpose (0.5 ms per act call, in its evaluator:
  off the clock)."""
  steps_per_update, updates_to_learn, train_sleep_s, act_sleep_s = 1000, 4, 0.25, 0.0005


class SleepyFromEnv(SleepyTrainer):
  """SleepyTrainer with its per-update sleep read from $TRAIN_SLEEP_S (a 'regression' on demand)."""
  train_sleep_s = float(os.environ.get("TRAIN_SLEEP_S", "0.25"))


class ClockTamperer(SleepyTrainer):
  """Freezes every clock in its own process, then trains for a known time."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    real_sleep = time.sleep
    for name in ("time", "perf_counter", "monotonic", "process_time", "perf_counter_ns", "monotonic_ns", "time_ns"):
      setattr(time, name, lambda *a: 0)
    time.sleep = real_sleep


class NeverLearns(Scripted):
  updates_to_learn = 10**9


class SlowNeverLearns(NeverLearns):
  train_sleep_s = 0.05


class PassesUntrained(Scripted):
  updates_to_learn = 0


class LuckyPass(Scripted):
  """Good on the referee's regular evaluation batch, bad on the confirmation batch: never confirmed."""
  updates_to_learn = 1
  def act(self, obs):
    if len(obs) == self.task.confirm_episodes: return np.zeros(len(obs), dtype=np.int64)
    return super().act(obs)


class LuckyOnce(Scripted):
  """Passes one regular evaluation early but fails its confirmation; really learns later."""
  updates_to_learn = 6
  def act(self, obs):
    if self.updates == 2 and len(obs) != self.task.confirm_episodes: return good_policy(obs)
    return super().act(obs)


class CrashesOnSeed1(Scripted):
  def train(self):
    for steps in super().train():
      if self.seed == 1: raise RuntimeError("boom: simulated crash in train()")
      yield steps


class CrashesInConstructor(Scripted):
  def __init__(self, task, seed):
    raise ValueError("bad hyperparameter")


class HangsInTrain(Scripted):
  def train(self):
    yield from ()
    time.sleep(3600)


class HangsInAct(Scripted):
  def act(self, obs):
    if self.updates >= 1: time.sleep(3600)
    return super().act(obs)


class DiesInTrain(Scripted):
  def train(self):
    yield 1
    os.kill(os.getpid(), signal.SIGKILL)
    yield 2


class NaNActions(Scripted):
  def act(self, obs):
    if self.updates >= 1: return np.full(len(obs), np.nan)
    return super().act(obs)


class NaNSteps(Scripted):
  def train(self):
    yield float("nan")


class WrongShape(Scripted):
  def act(self, obs): return np.zeros((len(obs), 2), dtype=np.int64)


class FloatActions(Scripted):
  def act(self, obs): return np.zeros(len(obs), dtype=np.float32)


class NoAct:
  def __init__(self, task, seed): pass
  def train(self): yield 0


class NotAGenerator(Scripted):
  def train(self): return 5


class SeedSnoop(Scripted):
  """Writes everything it can see to $SNOOP_FILE, for the test that evaluation seeds stay hidden."""
  def __init__(self, task, seed):
    super().__init__(task, seed)
    import gc
    seen = [repr(os.environ), repr(sys.argv), repr(task), repr(vars(task))]
    seen += [repr(o) for o in gc.get_objects() if isinstance(o, (int, list, tuple)) and not isinstance(o, bool)][:200000]
    with open(os.environ["SNOOP_FILE"], "w") as f: f.write("\n".join(seen))


class ListActions(Scripted):
  def act(self, obs): return [0] * len(obs)


class SlowAct(Scripted):
  """An un-jitted act(): 30 ms a call."""
  act_sleep_s = 0.03


PREPARED: list[str] = []


def prepare(task) -> None:
  """A peer-style preload step (bench/referee/agent_host.py _preload `module:function`): records the task it was called with."""
  PREPARED.append(task.name)


class ReportsItsCores(SleepyTrainer):
  """Says in its profile which cores it may run on (a bit mask) and how many threads its pools were told to use."""
  @property
  def profile(self):
    return {"affinity_mask": float(sum(1 << c for c in os.sched_getaffinity(0))),
            "omp_threads": float(os.environ.get("OMP_NUM_THREADS", "0")), "tinygrad_threads": float(os.environ.get("NUM_CPU_THREADS", "0"))}


class KillsItsRefereeOnSeed1(Scripted):
  """Unsandboxed, on seed 1: kills the process that runs its referee (a slot's worker), mid-run."""
  def train(self):
    for steps in super().train():
      if self.seed == 1: os.kill(os.getppid(), signal.SIGKILL)
      yield steps


class ForgetsItsState(Scripted):
  """Its act() reads `updates`, which its snapshot() leaves out: an evaluator restored from it acts untrained."""
  def snapshot(self) -> dict:
    return {"nothing": np.zeros(1)}

  def restore(self, state: dict) -> None:
    pass
