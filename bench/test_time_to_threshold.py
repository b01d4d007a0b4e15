"""The benchmark: `pytest bench/`. One test per (agent, task) of the selected tier; each seed is one
pytest-benchmark round, timed by the referee's training clock (so the table is time-to-threshold).
Under `--regress-against`, the pair's test is its regression gate instead of its solve bar (bench/regress.py); under
`--workers`/`--ray` its runs are made side by side first (bench/parallel.py), then reported round by round."""
from __future__ import annotations

import pytest

from bench.analysis.gate import reproduce
from bench.referee.agent_api import AgentError
from bench.referee.clock import SESSION
from bench.referee.pair import Pair
from bench.regress import BaselineError
from bench.session import extra_info


def test_time_to_threshold(benchmark, bench_session, agent_spec, task):
  pair = Pair(agent_spec, task, bench_session.referee, bench_session.writer,
                on_record=lambda rec: bench_session.progress(rec, task), on_warning=bench_session.write_line,
                archive_dir=bench_session.dir)
  gate = None
  try:
    failed = None
    bench_session.announce_pool()
    if bench_session.pool is not None:     # runs side by side (bench/parallel.py): every record made, then reported in seed order
      try: bench_session.pool.run_pair(pair, bench_session.seeds, bench_session.seeds[0] if bench_session.cold_start else None)
      except AgentError as e: failed = str(e)
      if failed: pytest.fail(failed, pytrace=False)
      cold = next((r for r in pair.records if r.role == "cold-start"), None)
      made = {r.seed: r for r in pair.records if r.role == "timed"}
      run = lambda s: SESSION.add(made[s].censored_time_s)
    else:
      try:
        gate = bench_session.pair_gate(agent_spec, task, pair)
        if gate is None or not gate.interleaved: pair.warm_up()
        if gate: gate.warm_up()     # interleaved: both sides' workers warm up (bench/regress.py PairGate)
      except (AgentError, BaselineError) as e: failed = str(e)
      if failed: pytest.fail(failed, pytrace=False)   # outside the except: one message, not two chained tracebacks
      cold = pair.cold_start(bench_session.seeds[0]) if bench_session.cold_start else None
      run = pair.run if gate is None else (lambda s: gate.run(s, pair.run))

    seeds = iter(bench_session.seeds)
    benchmark.group = task.name
    try:
      if benchmark.disabled:   # --benchmark-disable: pedantic would run one round only
        for s in seeds: run(s)
      else:
        benchmark.pedantic(run, setup=lambda: ((next(seeds),), {}), rounds=len(bench_session.seeds), iterations=1, warmup_rounds=0)
    except BaselineError as e: failed = f"{e}\n  (this version's finished runs are in {bench_session.writer.path})"
    if failed: pytest.fail(failed, pytrace=False)
    timed = sorted((r for r in pair.records if r.role == "timed"), key=lambda r: r.seed)
    benchmark.extra_info.update(extra_info(agent_spec, task, timed, cold, bench_session.writer.path))
    if gate is not None and _gate(bench_session, gate, pair): return
    solved = sum(r.solved for r in timed)
    if solved / len(timed) < task.min_solve_rate:
      failures = "".join(f"\n  seed {r.seed}: {r.status}: {r.failure_reason.splitlines()[0]}" for r in timed if not r.solved)
      pytest.fail(f"{agent_spec.name} solved {task.name} on {solved}/{len(timed)} seeds, below the task's bar "
                  f"{task.min_solve_rate:.0%}{failures}", pytrace=False)
  finally:
    pair.close()
    if gate is not None: gate.close()


def _gate(bench_session, gate, pair) -> bool:
  """The pair's regression verdict (and its confirmation rerun under --confirm-regressions); fails the test only on
  *regressed*. False when there is nothing to judge (no baseline runs for it): then the solve bar applies."""
  row, warns = gate.judge(pair.records)
  for w in warns: bench_session.write_line(f"warning: {w}", yellow=True)
  if row is None: return False
  if row["verdict"] == "regressed" and bench_session.options.confirm_regressions:
    bench_session.write_line(f"gate: {row['agent']} on {row['task']} regressed ({row['why']}); rerunning to confirm", yellow=True)
    for s in bench_session.seeds: gate.run(s, lambda seed: pair.run(seed, role="rerun"), role="rerun")
    again, _ = gate.judge(pair.records, role="rerun")
    if again is None or again["verdict"] != "regressed":
      row = {**row, "verdict": "inconclusive", "why": f"regressed ({row['why']}), not on the rerun "
                                                      f"({again['verdict'] + ': ' + again['why'] if again else 'no runs'})"}
    else: row = {**again, "why": f"{again['why']}; confirmed (first: {row['ratio']:.2f}x, p {row['p_slower']:.2g})"}
  bench_session.gate_rows.append(row)
  bench_session.write_line(f"gate: {row['agent']} on {row['task']}: {row['verdict']}: {row['why']}",
                           **({"red": True, "bold": True} if row["verdict"] == "regressed" else {}))
  if row["verdict"] == "regressed":
    pytest.fail(f"{row['agent']} on {row['task']} regressed against {gate.base.label}: {row['why']}\n"
                f"  reproduce: {reproduce(row, bench_session.against)}", pytrace=False)
  return True
