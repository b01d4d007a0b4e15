"""The Markdown report and its plots, from synthetic records with known times."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.analysis.loaders import load_runs
from bench.analysis.report import PNGS, curves_on_grid, main, summary_table, verdict_table, write_report
from tests.synthetic import lognormal_times, runs_of, write


def test_report_has_the_verdict_table_and_every_plot(tmp_path):
  write(str(tmp_path / "runs.jsonl"), runs_of("ppo", lognormal_times(4.0, 10, seed=1)),
        runs_of("my-entry", lognormal_times(2.0, 10, seed=2)), runs_of("flaky", lognormal_times(3.0, 7, seed=3) + [None] * 3))
  path, comparisons, warns = write_report(load_runs(str(tmp_path)), str(tmp_path / "out"))
  md = open(path).read()
  assert not warns
  assert "| CartPole-v1 | my-entry | ppo" in md and "**faster**" in md and "**fails to solve**" in md
  for png in PNGS:
    assert f"]({png})" in md and (tmp_path / "out" / png).stat().st_size > 10_000
  assert set(comparisons["entry"]) == {"my-entry", "flaky"}
  assert (tmp_path / "out" / "summary.csv").exists() and (tmp_path / "out" / "comparisons.csv").exists()


def test_one_agent_gets_a_report_without_comparison(tmp_path):
  write(str(tmp_path / "runs.jsonl"), runs_of("ppo", [1.0, 2.0, 3.0]))
  path, comparisons, _ = write_report(load_runs(str(tmp_path)), str(tmp_path))
  md = open(path).read()
  assert comparisons.empty and "No comparison" in md
  assert (tmp_path / PNGS[0]).exists() and (tmp_path / PNGS[1]).exists() and not (tmp_path / PNGS[2]).exists()


def test_learning_curves_on_a_common_grid_by_hand():
  runs = pd.DataFrame([
    {"curve": [{"t": 0.0, "return": 10.0}, {"t": 2.0, "return": 50.0}], "status": "solved", "training_clock_s": 2.0},
    {"curve": [{"t": 1.0, "return": 5.0}], "status": "failed", "training_clock_s": 1.5},
    {"curve": [{"t": 0.0, "return": 9.0}], "status": "unsolved", "training_clock_s": 120.0},
  ])
  vals = curves_on_grid(runs, np.array([0.0, 0.5, 1.0, 2.0, 3.0]))
  assert vals[0].tolist() == [10.0, 10.0, 10.0, 50.0, 50.0]          # held after the solve
  assert np.isnan(vals[1, 0]) and vals[1, 2] == 5.0 and np.isnan(vals[1, 3:]).all()   # none before the first, none after a crash
  assert vals[2, 0] == 9.0 and np.isnan(vals[2, 1:]).all()           # one evaluation at step 0 is not a flat line to the budget


def test_cli_pools_sources_and_reports_errors(tmp_path, capsys):
  a = write(str(tmp_path / "s1" / "runs.jsonl"), runs_of("ppo", lognormal_times(4.0, 10, seed=4)))
  b = write(str(tmp_path / "s2" / "runs.jsonl"), runs_of("entry", lognormal_times(2.0, 10, seed=5)))
  assert main([a, b, "--out", str(tmp_path / "rep")]) == 0
  out = capsys.readouterr().out
  assert "faster" in out and "report:" in out and (tmp_path / "rep" / "report.md").exists()
  assert main([str(tmp_path / "s1"), str(tmp_path / "s2"), "--baseline", "entry", "--out", str(tmp_path / "rep2")]) == 0
  assert "slower" in capsys.readouterr().out
  assert main([str(tmp_path / "nothing-here")]) == 1
  (tmp_path / "empty").mkdir()
  assert main([str(tmp_path / "empty")]) == 1
  with pytest.raises(SystemExit): main(["--no-such-option"])


def test_tables_agree_on_an_entry_that_solves_nothing_and_machines_have_no_nan(tmp_path):
  write(str(tmp_path / "runs.jsonl"), runs_of("ppo", lognormal_times(3.0, 5, seed=6)), runs_of("stuck", [None] * 5))
  runs = load_runs(str(tmp_path))
  _, comparisons, _ = write_report(runs, str(tmp_path))
  row = verdict_table(comparisons, bold=False).iloc[0]
  assert row["median s (entry / baseline)"].startswith(">120 / ") and row["speed-up [95% CI]"] == "- (median censored)"
  assert summary_table(runs).set_index("agent").loc["stuck", "median time (s)"] == ">120"
  assert "nan" not in open(tmp_path / "report.md").read().split("## Machines")[1]


def test_records_of_schema_2_describe_themselves_from_what_they_recorded(tmp_path):
  import json
  recs = [json.loads(r.to_json()) for r in runs_of("ppo", [2.0]) + runs_of("mine", [1.0])]
  for r, target in zip(recs, ["agents.ppo:PPO", "/home/me/mine.py:Mine"]):
    for k in ("agent_kind", "solve_bar"): r.pop(k)
    r.update(schema_version=2, agent_target=target)
  from bench.referee.records import GENESIS, line_sha256
  prev, lines = GENESIS, []
  for r in recs:
    lines.append(json.dumps({**r, "prev_sha256": prev}))
    prev = line_sha256(lines[-1])
  (tmp_path / "runs.jsonl").write_text("\n".join(lines) + "\n")
  runs = load_runs(str(tmp_path))
  assert list(runs["agent_kind"]) == ["reference", "entry"] and list(runs["solve_bar"]) == [0.9, 0.9]


def test_the_report_says_where_the_sessions_time_went(tmp_path):
  from bench.analysis.report import time_split
  recs = runs_of("ppo", [1.0, 2.0])
  for r in recs:
    r.breakdown.update(train_clock_s=r.training_clock_s, eval_s=3.0, start_up_s=2.0, evaluator_start_s=1.0, calibration_s=0.5,
                       wall_s=r.training_clock_s + 7.0)
    r.warm_up = {"start_up_s": 2.0, "wall_s": 4.0}
  write(str(tmp_path / "runs.jsonl"), recs)
  runs = load_runs(str(tmp_path))
  split = time_split(runs).iloc[0]
  assert split["training (on the clock)"] == pytest.approx(runs["training_clock_s"].sum())
  assert split["evaluation (off the clock)"] == 6.0 and split["warm-up"] == 6.0 and split["other"] == pytest.approx(1.0)
  assert split["total"] == pytest.approx(runs["training_clock_s"].sum() + 14.0 + 6.0)
  md = open(write_report(runs, str(tmp_path / "out"))[0]).read()
  assert "## Where the session's time went" in md and "evaluation (off the clock)" in md
