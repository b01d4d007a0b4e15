"""Records: JSON lines on disk, the pandas loaders, the summary table and the plot."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.analysis.loaders import load_curves, load_runs
from bench.analysis.report import summary_table
from bench.referee.agent_api import AgentSpec
from bench.referee.records import SCHEMA_VERSION, RecordWriter, RunRecord
from envs import get_task

TASK = get_task("CartPole-v1")
AGENT = AgentSpec(name="fake", target="tests/fake_agents.py:Scripted", source=__file__)


def make(seed, solved=True, t=2.0, role="timed", agent=AGENT):
  rec = RunRecord.start(agent, TASK, seed, role=role, kernel_cache="cold" if role == "cold-start" else "warm", device="CPU")
  rec.add_eval(0.0, 0, 20.0)
  rec.add_eval(t, 4096, 480.0 if solved else 100.0)
  if solved: rec.finish_solved(t, 4096, 499.0)
  else: rec.finish_unsolved("failed", "agent raised during train(): boom", t)
  return rec


def test_records_round_trip_through_jsonl_and_pandas(tmp_path):
  w = RecordWriter(str(tmp_path / "s1" / "runs.jsonl"))
  for rec in [make(0), make(1, t=3.0), make(2, solved=False)]: w.write(rec)
  lines = (tmp_path / "s1" / "runs.jsonl").read_text().splitlines()
  assert len(lines) == 3 and all(json.loads(l)["schema_version"] == SCHEMA_VERSION for l in lines)
  df = load_runs(str(tmp_path))
  assert list(df["seed"]) == [0, 1, 2] and list(df["solved"]) == [True, True, False]
  assert df.loc[2, "censored_time_s"] == TASK.time_budget_s and np.isnan(df.loc[2, "time_to_threshold_s"])
  for col in ("fingerprint.cpu", "fingerprint.python", "git.commit", "breakdown.eval_s", "agent_sha256", "kernel_cache"):
    assert col in df.columns
  curves = load_curves(df)
  assert len(curves) == 6 and set(curves.columns) >= {"agent", "task", "seed", "t", "steps", "return"}


def test_loader_refuses_another_schema(tmp_path):
  p = tmp_path / "runs.jsonl"
  p.write_text(json.dumps({"schema_version": 999}) + "\n")
  with pytest.raises(ValueError, match="schema_version"): load_runs(str(p))


def test_summary_counts_censored_runs_and_cold_start_apart():
  other = AgentSpec(name="other", target="x:Y", source=__file__)
  runs = pd.DataFrame([dict(vars(r)) for r in [make(0, t=2.0), make(1, t=4.0), make(2, solved=False),
                                                make(0, t=9.0, role="cold-start"),
                                                make(0, solved=False, agent=other), make(1, solved=False, agent=other)]])
  table = summary_table(runs).set_index("agent")
  assert table.loc["fake", "solved/seeds"] == "2/3"
  assert table.loc["fake", "median time (s)"] == "4.00"            # median of 2, 4 and the censored 120
  assert table.loc["fake", "cold-start (s)"] == "9.00"
  assert table.loc["fake", "failures"] == "1 failed (seed 2: agent raised during train(): boom)"
  assert table.loc["fake", "min-max time (s)"] == "2.00 - >120"     # the censored run is in the range, as in the median
  assert table.loc["other", "median time (s)"] == ">120"


def test_a_schema_6_record_is_read_as_evaluated_in_place_unfrozen_with_its_tasks_budget(tmp_path):
  r = json.loads(make(0).to_json())
  for k in ("budget_scale", "freezer", "evaluation"): r.pop(k)
  r.update(schema_version=6, prev_sha256="0" * 64)       # the first line of its file
  (tmp_path / "runs.jsonl").write_text(json.dumps(r) + "\n")
  df = load_runs(str(tmp_path))
  assert df.loc[0, "budget_scale"] == 1.0 and df.loc[0, "freezer"] == "none" and df.loc[0, "evaluation"].startswith("in place")
