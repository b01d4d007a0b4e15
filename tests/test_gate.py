"""The regression gate's statistics (bench/gate.py) on synthetic runs with a known truth."""
from __future__ import annotations

import numpy as np
import pytest

from bench.gate import judge, power

RNG = np.random.default_rng(0)
# a pool shaped like PPO CartPole's recorded times (10 seeds: 2.6-3.2 s, median 2.95): lognormal, sigma 0.08
POOL = np.exp(RNG.normal(np.log(2.95), 0.08, 400))
SOLVED = np.ones(len(POOL), bool)


def test_a_true_30_percent_slowdown_is_caught_with_10_seeds():
  assert power(POOL, SOLVED, 1.3, 10, solve_bar=0.9, trials=200) >= 0.9


def test_an_a_a_comparison_rarely_cries_wolf():
  assert power(POOL, SOLVED, 1.0, 10, solve_bar=0.9, trials=300) <= 0.01 + 0.02


def test_censored_runs_push_towards_regressed():
  """15 % slower: not called alone; with half the runs unsolved (censored at the budget, never dropped; the bar set
  at 50 % so that the solve rate does not decide it) the same runs are a regression."""
  base, cur, ones = POOL[:10], POOL[10:20] * 1.15, np.ones(10, bool)
  assert judge(base, cur, ones, ones, solve_bar=0.5).verdict != "regressed"
  cur[:5] = 120.0
  r = judge(base, cur, ones, np.arange(10) >= 5, solve_bar=0.5)
  assert r.verdict == "regressed" and r.ratio > 10


def test_a_solve_rate_drop_alone_is_caught():
  base, cur = POOL[:10], POOL[:10].copy()
  solved = np.ones(10, bool); solved[[3, 7]] = False       # crashed runs, their times no slower
  r = judge(base, cur, np.ones(10, bool), solved, solve_bar=0.9)
  assert r.verdict == "regressed" and "solves 8/10 seeds, under the bar 90%" in r.why


def test_contended_runs_make_a_slowdown_inconclusive_not_regressed():
  base, cur = POOL[:10], POOL[10:20] * 4                  # the 4-5x of a shared 2-core machine
  assert judge(base, cur, SOLVED[:10], SOLVED[:10], solve_bar=0.9).verdict == "regressed"
  r = judge(base, cur, SOLVED[:10], SOLVED[:10], solve_bar=0.9, contended_runs=10)
  assert r.verdict == "inconclusive" and "contended" in r.why


@pytest.mark.parametrize("factor, verdict", [(1.0, "unchanged"), (0.6, "improved"), (1.6, "regressed")])
def test_the_verdicts_by_size(factor, verdict):
  base, cur = POOL[:20], POOL[20:40] * factor
  assert judge(base, cur, SOLVED[:20], SOLVED[:20], solve_bar=0.9).verdict == verdict


def test_a_small_slowdown_is_not_a_regression_and_a_wide_spread_is_inconclusive():
  base, cur = POOL[:20], POOL[20:40] * 1.05               # real but under the 10 % tolerance
  assert judge(base, cur, SOLVED[:20], SOLVED[:20], solve_bar=0.9).verdict in ("unchanged", "inconclusive")
  wide = np.exp(RNG.normal(np.log(15), 0.4, 10))          # DQN-like spread, 5 seeds: too few to tell
  assert judge(wide[:5], wide[5:] * 1.2, SOLVED[:5], SOLVED[:5], solve_bar=0.9).verdict == "inconclusive"


def test_not_comparable_says_why():
  r = judge(POOL[:5], POOL[5:10], SOLVED[:5], SOLVED[:5], solve_bar=0.9, comparable=False, why_not="fingerprints differ")
  assert r.verdict == "not comparable" and r.why == "fingerprints differ"


def test_the_command_line_fails_only_on_regressed_and_puts_it_first(tmp_path, capsys):
  from bench.gate import main
  from tests.synthetic import runs_of, write
  base = write(str(tmp_path / "base" / "runs.jsonl"), runs_of("ppo", list(POOL[:10])), runs_of("dqn", list(POOL[10:20] * 5)))
  same = write(str(tmp_path / "same" / "runs.jsonl"), runs_of("ppo", list(POOL[20:30])), runs_of("dqn", list(POOL[30:40] * 5)))
  slow = write(str(tmp_path / "slow" / "runs.jsonl"), runs_of("ppo", list(POOL[20:30] * 1.6)), runs_of("dqn", list(POOL[30:40] * 5)))
  assert main([base, same]) == 0
  assert "regressed" not in capsys.readouterr().out
  assert main([base, slow]) == 1
  out = capsys.readouterr().out.splitlines()
  assert out[1].split()[:2] == ["regressed", "ppo"] and out[-1].startswith("regressed: ppo on CartPole-v1")
  assert "reproduce: pytest bench/ --agent ppo --task CartPole-v1 --seeds 10" in out[-1]
  other = write(str(tmp_path / "other" / "runs.jsonl"), runs_of("ppo", list(POOL[20:30] * 1.6), cpu="another CPU"))
  assert main([base, other]) == 0 and "not comparable" in capsys.readouterr().out
