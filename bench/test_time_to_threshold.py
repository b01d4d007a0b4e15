"""The benchmark: `pytest bench/`. One test per (agent, task) of the selected tier; each seed is one
pytest-benchmark round, timed by the referee's training clock (so the table is time-to-threshold)."""
from __future__ import annotations

import statistics

import pytest

from bench.agent_api import AgentError
from bench.suite import Suite


def test_time_to_threshold(benchmark, bench_session, agent_spec, task):
  suite = Suite(agent_spec, task, bench_session.referee, bench_session.writer, on_record=bench_session.progress)
  try:
    try: suite.warm_up()
    except AgentError as e: pytest.fail(str(e), pytrace=False)
    cold = suite.cold_start(bench_session.seeds[0]) if bench_session.cold_start else None

    seeds = iter(bench_session.seeds)
    benchmark.group = task.name
    if benchmark.disabled:   # --benchmark-disable: pedantic would run one round only
      timed = [suite.run(s) for s in seeds]
    else:
      benchmark.pedantic(suite.run, setup=lambda: ((next(seeds),), {}), rounds=len(bench_session.seeds),
                         iterations=1, warmup_rounds=0)
      timed = [r for r in suite.records if r.role == "timed"]

    solved = [r for r in timed if r.solved]
    rate = len(solved) / len(timed)
    benchmark.extra_info.update({
      "agent": agent_spec.name, "agent_sha256": agent_spec.source_sha256, "task": task.name, "threshold": task.threshold,
      "seeds": [r.seed for r in timed], "solved": len(solved), "runs": len(timed), "solve_rate": rate,
      "time_to_threshold_s": [r.time_to_threshold_s for r in timed],
      "steps_to_threshold": [r.steps_to_threshold for r in timed],
      "median_steps_to_threshold": statistics.median([r.steps_to_threshold for r in solved]) if solved else None,
      "confirmation_return": [r.confirmation_return for r in timed],
      "statuses": [r.status for r in timed], "failure_reasons": [r.failure_reason for r in timed if r.failure_reason],
      "censored_at_budget_s": task.time_budget_s, "kernel_cache": "warm",
      "cold_start_time_s": cold.time_to_threshold_s if cold else None, "cold_start_status": cold.status if cold else None,
      "records": bench_session.writer.path,
    })
    failures = "".join(f"\n  seed {r.seed}: {r.status}: {r.failure_reason.splitlines()[0]}" for r in timed if not r.solved)
    assert rate >= task.min_solve_rate, \
      f"{agent_spec.name} solved {task.name} on {len(solved)}/{len(timed)} seeds, below the task's bar {task.min_solve_rate:.0%}{failures}"
  finally:
    suite.close()
