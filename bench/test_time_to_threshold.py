"""The benchmark: `pytest bench/`. One test per (agent, task) of the selected tier; each seed is one
pytest-benchmark round, timed by the referee's training clock (so the table is time-to-threshold)."""
from __future__ import annotations

import pytest

from bench.agent_api import AgentError
from bench.session import extra_info
from bench.suite import Suite


def test_time_to_threshold(benchmark, bench_session, agent_spec, task):
  suite = Suite(agent_spec, task, bench_session.referee, bench_session.writer,
                on_record=lambda rec: bench_session.progress(rec, task), on_warning=bench_session.write_line)
  try:
    failed = None
    try: suite.warm_up()
    except AgentError as e: failed = str(e)
    if failed: pytest.fail(failed, pytrace=False)   # outside the except: one message, not two chained tracebacks
    cold = suite.cold_start(bench_session.seeds[0]) if bench_session.cold_start else None

    seeds = iter(bench_session.seeds)
    benchmark.group = task.name
    if benchmark.disabled:   # --benchmark-disable: pedantic would run one round only
      for s in seeds: suite.run(s)
    else:
      benchmark.pedantic(suite.run, setup=lambda: ((next(seeds),), {}), rounds=len(bench_session.seeds),
                         iterations=1, warmup_rounds=0)
    timed = [r for r in suite.records if r.role == "timed"]
    benchmark.extra_info.update(extra_info(agent_spec, task, timed, cold, bench_session.writer.path))
    solved = sum(r.solved for r in timed)
    if solved / len(timed) < task.min_solve_rate:
      failures = "".join(f"\n  seed {r.seed}: {r.status}: {r.failure_reason.splitlines()[0]}" for r in timed if not r.solved)
      pytest.fail(f"{agent_spec.name} solved {task.name} on {solved}/{len(timed)} seeds, below the task's bar "
                  f"{task.min_solve_rate:.0%}{failures}", pytrace=False)
  finally:
    suite.close()
