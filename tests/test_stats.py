"""The statistics and verdicts, on synthetic result sets with a known difference."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.analysis.loaders import load_runs
from bench.analysis.stats import compare, compare_runs, iqm, performance_profile, pick_baseline
from tests.synthetic import lognormal_times, runs_of, write


def frame(tmp_path, *groups) -> pd.DataFrame:
  return load_runs(write(str(tmp_path / "runs.jsonl"), *groups))


def test_two_times_faster_entry_is_faster_and_the_ci_covers_two():
  base, entry = lognormal_times(4.0, 10, seed=1), lognormal_times(2.0, 10, seed=2)
  c = compare(entry, base, [True] * 10, [True] * 10)
  assert c.verdict == "faster"
  assert c.speedup_ci_low <= 2.0 <= c.speedup_ci_high and c.speedup_ci_low > 1.0
  assert c.speedup == pytest.approx(np.median(base) / np.median(entry))
  assert c.p_faster < 0.01 and c.p_slower > 0.99
  assert c.prob_improvement > 0.8


def test_two_times_slower_entry_is_slower():
  base, entry = lognormal_times(2.0, 10, seed=3), lognormal_times(4.0, 10, seed=4)
  c = compare(entry, base, [True] * 10, [True] * 10)
  assert c.verdict == "slower" and c.speedup_ci_low <= 0.5 <= c.speedup_ci_high and c.speedup_ci_high < 1.0


def test_equal_sets_give_no_significant_difference():
  same = lognormal_times(3.0, 10, seed=5)
  c = compare(same, list(same), [True] * 10, [True] * 10)
  assert c.verdict == "no significant difference"
  assert c.speedup == pytest.approx(1.0) and c.prob_improvement == pytest.approx(0.5)
  assert c.speedup_ci_low <= 1.0 <= c.speedup_ci_high


def test_false_verdicts_and_ci_coverage_over_many_draws():
  """Same distribution: 'faster' about VERDICT_ALPHA of the time; a true 2x: the CI covers 2 about 95% of the time."""
  false_faster = sum(compare(lognormal_times(3.0, 10, seed=s), lognormal_times(3.0, 10, seed=1000 + s),
                             [True] * 10, [True] * 10).verdict == "faster" for s in range(200))
  assert false_faster / 200 <= 0.10
  cover = 0
  for s in range(100):
    c = compare(lognormal_times(2.0, 10, seed=2000 + s), lognormal_times(4.0, 10, seed=3000 + s), [True] * 10, [True] * 10)
    cover += c.speedup_ci_low <= 2.0 <= c.speedup_ci_high
  assert cover >= 88      # measured: 96/100 for this percentile bootstrap


def test_censored_runs_move_the_verdict_the_right_way():
  budget = 120.0
  base = lognormal_times(4.0, 10, seed=6)
  entry = lognormal_times(2.0, 10, seed=7)
  clean = compare(entry, base, [True] * 10, [True] * 10, solve_bar=0.5)
  # three of the entry's fastest runs never solve: counted at the budget, they make it look worse
  order = np.argsort(entry)
  censored = np.array(entry)
  censored[order[:3]] = budget
  solved = np.ones(10, bool)
  solved[order[:3]] = False
  worse = compare(censored, base, solved, [True] * 10, solve_bar=0.5)
  assert worse.p_faster > clean.p_faster and worse.speedup < clean.speedup and worse.prob_improvement < clean.prob_improvement
  # under the task's 90 % bar the entry fails to solve, however fast its solved runs are
  assert compare(censored, base, solved, [True] * 10, solve_bar=0.9).verdict == "fails to solve"
  # dropping the unsolved runs instead would have hidden it
  assert compare(np.delete(censored, order[:3]), base, [True] * 7, [True] * 10, solve_bar=0.5).verdict == "faster"
  # the baseline's unsolved runs count for the entry
  base_c = np.array(base)
  base_c[:6] = budget
  better = compare(censored, base_c, solved, [False] * 6 + [True] * 4, solve_bar=0.5)
  assert better.p_faster < worse.p_faster and "baseline solves only 4/10" in better.notes


def test_entry_that_never_solves_fails_to_solve_not_slower():
  c = compare([120.0] * 10, lognormal_times(3.0, 10, seed=8), [False] * 10, [True] * 10)
  assert c.verdict == "fails to solve" and c.solve_rate_entry == 0.0


def test_too_few_runs_say_so():
  c = compare([1.0, 1.1], [3.0, 3.1], [True] * 2, [True] * 2)
  assert c.verdict == "no significant difference" and "too few" in c.notes   # 2 vs 2: smallest p is 1/6


def test_iqm_by_hand():
  assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(np.mean([3, 4, 5, 6]))


def test_compare_runs_picks_the_fastest_reference_and_flags_hardware(tmp_path):
  runs = frame(tmp_path, runs_of("ppo", lognormal_times(4.0, 10, seed=9)),
               runs_of("entry", lognormal_times(2.0, 10, seed=10)),
               runs_of("other-box", lognormal_times(2.0, 10, seed=11), cpu="Some Other CPU"))
  assert pick_baseline(runs, "CartPole-v1") == "ppo"
  table, warns = compare_runs(runs)
  v = table.set_index("entry")["verdict"]
  assert v["entry"] == "faster" and v["other-box"] == "not comparable"
  assert any("other-box and ppo ran on different hardware" in w and "no verdict" in w for w in warns)
  forced, warns = compare_runs(runs, force=True)
  assert forced.set_index("entry").loc["other-box", "verdict"] == "faster" and any("forced" in w for w in warns)
  # an explicit baseline; a baseline that did not run is a warning, not a crash
  by_entry, _ = compare_runs(runs, baseline="entry")
  assert set(by_entry["baseline"]) == {"entry"} and by_entry.set_index("entry").loc["ppo", "verdict"] == "slower"
  none, warns = compare_runs(runs, baseline="nobody")
  assert none.empty and "baseline 'nobody' has no timed runs" in warns[0]


def test_no_reference_and_no_baseline_is_a_clear_warning(tmp_path):
  runs = frame(tmp_path, runs_of("a", [1.0, 2.0]), runs_of("b", [2.0, 3.0]))
  table, warns = compare_runs(runs)
  assert table.empty and "no reference agent ran on it (add --with-references, or name a --baseline)" in warns[0]


def test_performance_profile_by_hand(tmp_path):
  runs = frame(tmp_path, runs_of("ppo", [2.0, 4.0, 6.0]), runs_of("entry", [1.0, 3.0, None]))
  prof = performance_profile(runs, {"CartPole-v1": "ppo"}, np.array([0.25, 0.5, 1.0, 2.0, 100.0])).set_index(["agent", "tau"])
  # ppo's median is 4: ppo's ratios 0.5, 1, 1.5; entry's 0.25, 0.75, unsolved (never counts)
  assert list(prof.loc["ppo", "fraction"]) == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
  assert list(prof.loc["entry", "fraction"]) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
