"""Does a secret per-run variant of a task close "learned before the clock" by construction? (issue 25)

The idea: each run steps a variant of the task drawn from a secret seed, one a learner is indifferent to and prior
knowledge is not (observation dimensions permuted and sign-flipped, discrete actions permuted), so that weights or a
controller written before the clock would not fit it. This measures the idea on CartPole-v1 with the attack a
competent entrant would write: it knows the task's dynamics (gymnasium's own), takes K random-action steps on the
clock, tries every variant (4! permutations x 2^4 signs x 2 action orders = 768), keeps the one whose undoing makes
the observed transitions fit the known dynamics, and then runs its hand-written controller on the undone observations.

    python scripts/secret_variant.py [--variants 200] [--steps 8]

It prints, over many secret variants: how often the hand-written controller solves the variant without identification
(prior knowledge alone), how often K steps identify the variant exactly, and the time that takes.
"""
from __future__ import annotations

import argparse
import itertools
import time

import gymnasium as gym
import numpy as np


def controller(obs: np.ndarray) -> int:
  """A hand-written CartPole controller (no learning): tests/fake_agents.py good_policy."""
  return int(obs[0] * 0.1 + obs[1] * 0.5 + obs[2] * 10 + obs[3] * 2 > 0)


class Variant:
  """Observation o' = s * o[perm], action a' = act_perm[a]: what the agent sees and sends."""
  def __init__(self, rng: np.random.Generator):
    self.perm, self.sign, self.act = rng.permutation(4), rng.choice([-1.0, 1.0], 4), rng.permutation(2)
  def obs(self, o): return self.sign * o[self.perm]
  def action(self, a): return int(self.act[a])


MODEL = gym.make("CartPole-v1").unwrapped     # the attack's copy of the dynamics
MODEL.reset(seed=0)


def true_step(state: np.ndarray, action: int) -> np.ndarray:
  """CartPole-v1's dynamics (gymnasium's own, from a state)."""
  MODEL.state, MODEL.steps_beyond_terminated = state.astype(np.float64).copy(), None
  return np.asarray(MODEL.step(action)[0], dtype=np.float64)


CANDIDATES = [(np.array(p), np.array(s), np.array(a)) for p in itertools.permutations(range(4))
              for s in itertools.product([-1.0, 1.0], repeat=4) for a in ([0, 1], [1, 0])]


def identify(transitions) -> tuple:
  """The candidate variant under which the observed (o', a', next o') fit the known dynamics best."""
  best, err = None, np.inf
  for perm, sign, act in CANDIDATES:
    inv = np.argsort(perm)
    e = 0.0
    for o, a, n in transitions:
      s = (sign * o)[inv]                      # o = sign * s[perm]  =>  s = (sign * o)[inv]
      a_true = int(act[a])
      e += float(np.sum(((sign * n)[inv] - true_step(s, a_true)) ** 2))
      if e >= err: break
    if e < err: best, err = (perm, sign, act), e
  return best


def episode(variant: Variant, seed: int, policy) -> float:
  env = gym.make("CartPole-v1")
  o, _ = env.reset(seed=seed)
  total, done = 0.0, False
  while not done:
    o, r, term, trunc, _ = env.step(variant.action(policy(variant.obs(o))))
    total, done = total + r, term or trunc
  return total


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--variants", type=int, default=200, help="secret variants drawn (default: %(default)r)")
  ap.add_argument("--steps", type=int, default=8, help="random-action steps the attack takes to identify one (default: %(default)r)")
  args = ap.parse_args()
  rng = np.random.default_rng(12345)
  prior_solves = identified = solved_after = 0
  times = []
  for k in range(args.variants):
    v = Variant(rng)
    prior_solves += episode(v, 10_000 + k, controller) >= 475       # prior knowledge alone, on the variant
    env = gym.make("CartPole-v1")
    o, _ = env.reset(seed=k)
    t0, trans = time.perf_counter(), []
    for _ in range(args.steps):                                     # the attack: K random steps on the variant
      a_agent = int(rng.integers(2))
      n, _, term, trunc, _ = env.step(v.action(a_agent))
      trans.append((v.obs(o), a_agent, v.obs(n)))
      o = n if not (term or trunc) else env.reset()[0]
    perm, sign, act = identify(trans)
    times.append(time.perf_counter() - t0)
    mirror = np.array_equal(sign, -v.sign) and np.array_equal(act, v.act[::-1])   # CartPole's left-right mirror: the same task
    identified += bool(np.array_equal(perm, v.perm) and (mirror or (np.array_equal(sign, v.sign) and np.array_equal(act, v.act))))
    inv, act_inv = np.argsort(perm), np.argsort(act)
    undo = lambda ob, inv=inv, sign=sign, act_inv=act_inv: int(act_inv[controller((sign * ob)[inv])])  # noqa: E731
    solved_after += episode(v, 20_000 + k, undo) >= 475
  n = args.variants
  print(f"CartPole-v1, {n} secret variants (obs permuted and sign-flipped, actions permuted), {len(CANDIDATES)} possible:")
  print(f"  the hand-written controller, no identification: solves {prior_solves}/{n}")
  print(f"  identified (up to the left-right mirror) from {args.steps} random steps: {identified}/{n}; then solves {solved_after}/{n}; "
        f"identification took {np.median(times) * 1e3:.0f} ms median (max {max(times) * 1e3:.0f} ms) on one core")


if __name__ == "__main__":
  main()
