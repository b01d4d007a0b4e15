"""The regression gate's statistics (bench/analysis/gate.py) on synthetic runs with a known truth."""
from __future__ import annotations

import numpy as np
import pytest

from bench.analysis.gate import judge, power

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
  r = judge(base, POOL[10:20] * 1.25, SOLVED[:10], SOLVED[:10], solve_bar=0.9, contended_runs=3)   # slower, whatever p says
  assert r.verdict == "inconclusive" and "3 of 10 current runs were contended" in r.why


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
  from bench.analysis.gate import main
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
  assert main(["--power", base, same, "--trials", "10"]) == 0
  out = capsys.readouterr().out
  assert "+50% @ 10" in out and "false alarms @ 10" in out and len(out.splitlines()) == 3   # header, dqn, ppo


def test_fewer_than_5_runs_a_side_is_never_called_unchanged():
  r = judge(POOL[:4], POOL[4:8], SOLVED[:4], SOLVED[:4], solve_bar=0.9)
  assert r.verdict == "inconclusive" and "5 needed to call it unchanged" in r.why


def test_a_slower_machine_is_not_comparable_with_a_stored_baseline(tmp_path):
  """Stored runs: each session's speed calibration must agree within the tolerance, else the gate says which machine
  was slower instead of calling the code slower. Interleaved (a git-ref baseline run beside, on this machine) the
  scores differ by the moment's load, not the machine: recorded, not judged."""
  from bench.analysis.gate import gate_runs
  from bench.analysis.loaders import load_runs
  from bench.referee.calibrate import WORKLOAD
  from tests.synthetic import runs_of, write

  def session(name, times, score):
    recs = runs_of("ppo", list(times))
    for r in recs: r.calibration = {"workload": WORKLOAD, "score_s": score}
    return load_runs(write(str(tmp_path / name / "runs.jsonl"), recs))
  base = session("base", POOL[:10], 0.080)
  slow = session("slow-machine", POOL[10:20] * 2.1, 0.168)
  df, _ = gate_runs(base, slow)
  assert df["verdict"][0] == "not comparable" and "2.10x slower than the baseline's" in df["why"][0]
  df, _ = gate_runs(base, slow, interleaved=True)
  assert df["verdict"][0] == "regressed" and df["machine_speed_ratio"][0] == pytest.approx(2.1)
  df, _ = gate_runs(base, session("same-machine", POOL[10:20] * 2.1, 0.083))
  assert df["verdict"][0] == "regressed" and df["machine_speed_ratio"][0] == pytest.approx(0.083 / 0.080)


def test_the_power_table_and_its_seed_recommendation():
  from dataclasses import asdict

  from bench.analysis.gate import power_table, recommend_seeds
  from bench.analysis.loaders import frame
  from tests.synthetic import runs_of
  runs = frame([asdict(r) for r in runs_of("ppo", list(POOL[:40]))])
  table = power_table(runs, trials=40)
  row = table.iloc[0]
  assert row["+10% @ 20"] <= 0.1                     # within the tolerance: never a regression, by design
  assert row["+50% @ 10"] >= 0.9 and row["+50% @ 5"] <= row["+50% @ 20"]
  assert row["false alarms @ 10"] <= 0.05
  assert recommend_seeds(table)[("ppo", "CartPole-v1")] in (5, 10, 20)


def test_runs_paired_by_seed_show_a_slowdown_the_seed_spread_hides():
  """Interleaved runs take the same steps per seed on both sides: the per-seed ratio cancels the spread across seeds.
  A 15 % slowdown under a 40 % seed spread: unpaired inconclusive, paired clearly over 1.1 (shown, not deciding)."""
  from dataclasses import asdict

  from bench.analysis.gate import gate_runs, paired
  from bench.analysis.loaders import frame
  from tests.synthetic import runs_of
  seeds = np.exp(RNG.normal(np.log(15), 0.4, 10))                    # DQN-like: the seed decides most of the time
  noise = lambda k: np.exp(np.random.default_rng(k).normal(0, 0.03, 10))   # noqa: E731
  base = frame([asdict(r) for r in runs_of("dqn", list(seeds * noise(1)))])
  cur = frame([asdict(r) for r in runs_of("dqn", list(seeds * 1.15 * noise(2)))])
  df, _ = gate_runs(base, cur)
  assert df["verdict"][0] == "inconclusive"
  assert df["paired_runs"][0] == 10 and 1.1 < df["paired_ci_low"][0] < df["paired_ratio"][0] < 1.25 and df["p_paired_slower"][0] < 0.01
  other_seeds = frame([asdict(r) for r in runs_of("dqn", list(seeds), start_seed=100)])
  assert paired(base, other_seeds)["paired_runs"] == 0                  # different seeds: nothing to pair


def test_runs_made_with_other_tinygrad_settings_are_not_comparable(tmp_path, monkeypatch):
  """A tinygrad switch such as HCQ2 (one compiled submitter per jitted graph: DQN's update twice as fast on the CPU) is
  recorded with each run (tinygrad_env), and the gate refuses to call a change a regression or an improvement across it."""
  from bench.analysis.gate import gate_runs
  from bench.analysis.loaders import load_runs
  from tests.synthetic import runs_of, write
  base = load_runs(write(str(tmp_path / "base" / "runs.jsonl"), runs_of("ppo", list(POOL[:10]))))
  monkeypatch.setenv("HCQ2", "1")
  recs = runs_of("ppo", list(POOL[10:20] * 0.5))
  assert all(r.tinygrad_env == {"HCQ2": "1"} for r in recs)
  df, _ = gate_runs(base, load_runs(write(str(tmp_path / "hcq2" / "runs.jsonl"), recs)))
  assert df["verdict"][0] == "not comparable" and "tinygrad settings differ" in df["why"][0]


def test_runs_side_by_side_are_not_compared_with_runs_alone(tmp_path):
  """Runs made with --workers (pinned, beside other runs) carry their placement; the gate and the report's verdicts never
  judge them against runs made one at a time (README: Many runs at once)."""
  from bench.analysis.gate import gate_runs
  from bench.analysis.loaders import load_runs
  from bench.analysis.stats import compare_runs
  from tests.synthetic import runs_of, write
  alone = runs_of("ppo", list(POOL[:10]))
  side = runs_of("ppo", list(POOL[10:20] * 0.5))
  for i, r in enumerate(side): r.placement = {"slot": i % 2, "workers": 2, "cores": [i % 2], "scheduler": "local", "beside": 1}
  df, _ = gate_runs(load_runs(write(str(tmp_path / "a" / "runs.jsonl"), alone)), load_runs(write(str(tmp_path / "b" / "runs.jsonl"), side)))
  assert df["verdict"][0] == "not comparable" and "2 at once (local), 1 cores each" in df["why"][0] and "one at a time" in df["why"][0]
  both = load_runs(write(str(tmp_path / "c" / "runs.jsonl"), alone + runs_of("dqn", list(POOL[10:20]))))
  assert (compare_runs(both)[0]["verdict"] != "not comparable").all()       # alone against alone: a verdict
  for r in side: r.agent = "dqn"
  mixed = load_runs(write(str(tmp_path / "d" / "runs.jsonl"), alone + side))
  table, warnings = compare_runs(mixed)
  assert (table["verdict"] == "not comparable").all() and any("at once" in w for w in warnings)


def test_one_contended_run_cannot_veto_the_verdict(tmp_path):
  """Issue 25: one contended run made the gate inconclusive (an entry made the referee itself its 'other process' and a
  2.4x regression read inconclusive). Where the clean runs are most of each side they are judged alone; where most runs
  were contended the slowdown stays inconclusive."""
  from bench.analysis.gate import gate_runs
  from bench.analysis.loaders import load_runs
  from tests.synthetic import runs_of, write

  def session(name, times, contended=()):
    recs = runs_of("ppo", list(times))
    for i, r in enumerate(recs): r.contended, r.contended_why = i in contended, "other processes used 1.0 of the 2 cores" if i in contended else ""
    return load_runs(write(str(tmp_path / name / "runs.jsonl"), recs))
  base = session("base", POOL[:10])
  df, _ = gate_runs(base, session("one", POOL[10:20] * 2.4, contended={3}))
  assert df["verdict"][0] == "regressed" and "1 contended current and 0 contended baseline run(s) left out" in df["why"][0]
  assert df["runs_current"][0] == 9
  df, _ = gate_runs(base, session("most", POOL[10:20] * 2.4, contended=set(range(6))))
  assert df["verdict"][0] == "inconclusive" and "6 of 10 current runs were contended" in df["why"][0]


def test_the_referees_own_cpu_is_not_another_process():
  """The referee reading a reply trickled byte by byte is busy on the run's behalf: Contention subtracts its CPU."""
  import time

  from bench.referee.contention import Contention

  class Idle:           # an agent's tree that uses no CPU
    def scan(self): return 0.0
    def sched(self): return 0.0, 0.0
  c = Contention()
  c.enter(Idle())
  end = time.process_time() + 0.5
  while time.process_time() < end: pass      # the referee's own work during the request
  c.leave(Idle())
  assert c.others_s < 0.15, c.others_s


def test_an_unsolved_contended_run_is_never_left_out(tmp_path):
  """An agent that makes its failing runs look contended must not have them dropped: only solved ones are left out."""
  from bench.analysis.gate import _clean_majority
  from bench.analysis.loaders import load_runs
  from tests.synthetic import runs_of, write
  recs = runs_of("ppo", list(POOL[:8]) + [None, None])       # two unsolved
  for i, r in enumerate(recs): r.contended = i in (0, 8, 9)
  c = load_runs(write(str(tmp_path / "c" / "runs.jsonl"), recs))
  b = load_runs(write(str(tmp_path / "b" / "runs.jsonl"), runs_of("ppo", list(POOL[10:20]))))
  _, kept, note = _clean_majority(b, c)
  assert len(kept) == 9 and (~kept["solved"]).sum() == 2 and "1 contended current" in note
