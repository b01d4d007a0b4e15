"""The referee's evaluation stops once it cannot pass (envs.Task.run_episodes give_up_below, issue 26): the same pass or
fail as with every episode run out, far fewer act() calls where it fails."""
import dataclasses

import numpy as np

from envs.tasks import TASKS

CARTPOLE, ACROBOT = TASKS["CartPole-v1"], TASKS["Acrobot-v1"]


def balances(obs: np.ndarray) -> np.ndarray:
  """A hand-written CartPole controller that holds the pole for all 500 steps on these seeds."""
  return ((obs[:, 2] * 10 + obs[:, 3] * 2 + obs[:, 1] * 0.1 + obs[:, 0] * 0.05) > 0).astype(np.int64)


class Counted:
  def __init__(self, policy): self.policy, self.calls = policy, 0
  def __call__(self, obs):
    self.calls += 1
    return self.policy(obs)


def run(task, policy, seeds, give_up_below):
  counted, info = Counted(policy), {}
  returns = task.run_episodes(counted, seeds, give_up_below=give_up_below, info=info)
  return returns, counted.calls, info.get("curtailed_at")


def one_falls(obs: np.ndarray) -> np.ndarray:
  a = balances(obs)
  a[0] = 0
  return a


def test_one_early_failure_decides_a_cartpole_evaluation_at_once():
  """Nine episodes held to 500, one pushed left from the start: the mean can be at most (9 x 500 + ~10) / 10 < 475 once
  that one falls, so the evaluation stops there, not at step 500; its returns bound the full ones from above."""
  seeds = list(range(100, 110))
  full, full_calls, _ = run(CARTPOLE, one_falls, seeds, None)
  bounds, calls, at = run(CARTPOLE, one_falls, seeds, CARTPOLE.threshold)
  assert full_calls == 500 and full.mean() < CARTPOLE.threshold and full[0] < 20
  assert at == calls <= 20 and bounds.mean() < CARTPOLE.threshold
  assert (bounds >= full).all() and bounds[0] == full[0]


def test_an_evaluation_that_can_pass_runs_out_and_gives_the_true_returns():
  seeds = list(range(10))
  full, _, _ = run(CARTPOLE, balances, seeds, None)
  returns, calls, at = run(CARTPOLE, balances, seeds, CARTPOLE.threshold)
  assert at is None and calls == 500 and (returns == full).all() and returns.mean() >= CARTPOLE.threshold


def test_the_decision_is_the_full_evaluations_on_many_policies():
  """Random and biased policies on CartPole and Acrobot (a step pays at most 0 there): whenever the evaluation stopped,
  the full one failed too, and every bound is at least the full return."""
  for task in (CARTPOLE, ACROBOT):
    n_actions = int(task.spaces()[1].n)
    for k in range(6):
      rng = np.random.default_rng(k)
      bias = rng.dirichlet(np.ones(n_actions))
      def policy(obs, rng=rng, bias=bias, n=n_actions): return rng.choice(n, size=len(obs), p=bias)
      seeds = [1000 * k + i for i in range(10)]
      rng_state = rng.bit_generator.state
      full, full_calls, _ = run(task, policy, seeds, None)
      rng.bit_generator.state = rng_state                     # the same actions again
      bounds, calls, at = run(task, policy, seeds, task.threshold)
      assert (bounds.mean() >= task.threshold) == (full.mean() >= task.threshold)
      assert (bounds >= full - 1e-9).all()
      if at is not None: assert calls == at <= full_calls and bounds.mean() < task.threshold
  # Acrobot's random policy fails: with 0 the most a step pays, 10 episodes still running at step 101 cannot average -100
  _, calls, at = run(ACROBOT, lambda obs: np.zeros(len(obs), np.int64), list(range(10)), ACROBOT.threshold)
  assert at is not None and calls <= 101


def test_a_task_that_does_not_state_what_a_step_pays_is_never_cut_short():
  task = dataclasses.replace(CARTPOLE, max_step_reward=None)
  returns, calls, at = run(task, one_falls, list(range(100, 110)), task.threshold)
  assert at is None and calls == 500 and returns.mean() < task.threshold


def test_the_record_says_which_evaluations_stopped_early():
  """Through the referee: LuckyPass passes its regular evaluations and pushes left on every confirmation batch. Each
  confirmation stops at its first fallen pole with the bound as its return; the regular evaluations, which pass, run
  out and give their true mean."""
  from bench.referee.run import run_one
  from tests.test_referee import CONFIG, TASK, fake
  task = dataclasses.replace(TASK, max_step_reward=1.0, step_budget=3000)
  rec = run_one(fake("LuckyPass"), task, 0, CONFIG)
  assert rec.status == "unsolved" and len(rec.confirmations) >= 2, rec.failure_reason
  for c in rec.confirmations: assert 0 < c["curtailed_at"] <= 20 and c["return"] < task.threshold
  passed = [p for p in rec.curve if p["steps"] > 0]
  assert passed and all("curtailed_at" not in p and p["return"] >= task.threshold for p in passed)
  assert "curtailed_at" in rec.curve[0] and rec.curve[0]["return"] < task.threshold     # the untrained policy falls
