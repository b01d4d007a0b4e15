"""What one `pytest bench/` session shares (the referee's settings, the records file, the runs so far) and what it
prints: a line per run as it ends, then the summary, the verdicts and where the records and the report went.
The pytest side (options, parametrization, hooks) is bench/plugin.py."""
from __future__ import annotations

import os
import platform
import statistics
from dataclasses import asdict
from datetime import datetime

from bench.analysis.loaders import frame
from bench.options import options
from bench.referee.clock import DEFAULT_TIMER
from bench.referee.config import RefereeConfig
from bench.referee.records import RecordWriter, RunRecord, settings_text
from bench.referee.signing import Signer, public_pem


def new_session_dir(results_dir: str) -> str:
  """results/<date-time>-<host>, created here; a session that starts in the same second (two terminals, a
  script starting several) gets -2, -3, ... so that no two sessions share a records file or a report."""
  base = os.path.join(results_dir, f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{platform.node() or 'host'}")
  os.makedirs(results_dir, exist_ok=True)
  for k in range(1, 1000):
    path = base if k == 1 else f"{base}-{k}"
    try:
      os.mkdir(path)
      return path
    except FileExistsError: continue
  raise RuntimeError(f"no free session directory under {results_dir}")


def run_line(rec: RunRecord, task) -> str:
  """One line per finished run: what it reached, the env steps done, and when the last evaluation was (an agent is
  only evaluated every `eval_every_steps`: a run can train for a long time without one)."""
  head = f"[{rec.agent} · {rec.task} · seed {rec.seed} · {rec.kernel_cache} cache{settings_text(rec.tinygrad_env, ' · ')}]"
  contended = f" CONTENDED ({rec.contended_why})" if rec.contended else ""
  if rec.solved:
    return (f"{head}{contended} solved in {rec.time_to_threshold_s:.2f} s, {rec.steps_to_threshold:,} steps "
            f"(confirmation {rec.confirmation_return:.1f})")
  evals = [p for p in rec.curve if p["steps"] > 0]
  cadence = " or ".join(filter(None, [f"every {task.eval_every_steps:,} steps" if task.eval_every_steps else "",
                                      f"every {task.eval_every_seconds:g} s" if task.eval_every_seconds else ""]))
  last = (f"last evaluation at {evals[-1]['steps']:,} steps, return {evals[-1]['return']:.1f}" if evals
          else f"no evaluation after the untrained one (they come {cadence})")
  return (f"{head}{contended} {rec.status.upper()} after {rec.training_clock_s:.2f} s, {rec.steps:,} env steps done, {last}: "
          f"{(rec.failure_reason or '').splitlines()[0] if rec.failure_reason else '?'}")


def extra_info(agent_spec, task, timed: list[RunRecord], cold: RunRecord | None, records_path: str) -> dict:
  """pytest-benchmark's extra_info of one (agent, task): the runs behind its timing statistics."""
  solved = [r for r in timed if r.solved]
  return {
    "agent": agent_spec.name, "agent_sha256": agent_spec.source_sha256, "task": task.name, "threshold": task.threshold,
    "seeds": [r.seed for r in timed], "solved": len(solved), "runs": len(timed), "solve_rate": len(solved) / len(timed),
    "time_to_threshold_s": [r.time_to_threshold_s for r in timed],
    "steps_to_threshold": [r.steps_to_threshold for r in timed],
    "median_steps_to_threshold": statistics.median([r.steps_to_threshold for r in solved]) if solved else None,
    "confirmation_return": [r.confirmation_return for r in timed],
    "statuses": [r.status for r in timed], "failure_reasons": [r.failure_reason for r in timed if r.failure_reason],
    "censored_at_budget_s": max([r.time_budget_s for r in timed] or [task.time_budget_s]), "kernel_cache": "warm",
    "cold_start_time_s": cold.time_to_threshold_s if cold else None, "cold_start_status": cold.status if cold else None,
    "records": records_path,
  }


class BenchSession:
  """The referee's settings, the records file and the runs of one session; prints as runs finish."""
  def __init__(self, config):
    self.config, self.options = config, (opts := options(config))
    self.referee = RefereeConfig(device=opts.agent_device, hang_timeout_s=opts.hang_timeout, eval_seed=opts.eval_seed,
                                 sandbox=opts.sandbox, hidden_dirs=(os.path.abspath(opts.results_dir),),
                                 memory_limit_gb=opts.agent_memory_gb, eval_cpu_cap_s=opts.eval_cpu_cap)
    self.seeds = list(range(opts.seeds))
    self.cold_start = opts.cold_start
    self.dir = new_session_dir(opts.results_dir)
    self.signer = getattr(config, "_rlspeedrun_signer", None) or Signer()     # --signing-key, else the session's own
    self.signer.write_public(os.path.join(self.dir, "signing-key.pub"))
    self.writer = RecordWriter(os.path.join(self.dir, "runs.jsonl"), self.signer)
    self.records: list[RunRecord] = []
    self.baseline = getattr(config, "_rlspeedrun_baseline", None)    # --regress-against (bench/regress.py)
    self.pool = getattr(config, "_rlspeedrun_pool", None)              # --workers, --devices, --ray (bench/parallel.py)
    self.pool_announced = False
    self.gate_rows: list[dict] = []

  def pair_gate(self, agent_spec, task, pair):
    """The regression gate of one (agent, task) under --regress-against, else None."""
    if self.baseline is None: return None
    from bench.regress import PairGate, baseline_line
    opts, label = self.options, getattr(self.baseline, "commit", "")[:10]
    return PairGate(self.baseline, agent_spec, task, self.referee, self.dir, alpha=opts.gate_alpha,
                    tolerance=opts.gate_tolerance, force=opts.force_compare, adopt=pair.adopt,
                    on_baseline=lambda rec: self.write_line(baseline_line(rec, label)))

  @property
  def against(self) -> str:
    """The baseline as a command names it again: the commit of a git ref (a branch moves), else what was given."""
    return getattr(self.baseline, "commit", None) or self.options.regress_against

  def write_line(self, line: str, **markup) -> None:
    """A line in the terminal now, even while pytest captures the test's output."""
    reporter = self.config.pluginmanager.get_plugin("terminalreporter")
    capman = self.config.pluginmanager.get_plugin("capturemanager")
    if reporter and capman:
      with capman.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line, **markup)
    else: print(line, flush=True)

  def announce_pool(self) -> None:
    """Once, before the first run: where the runs go."""
    if self.pool is None or self.pool_announced: return
    self.pool_announced = True
    where = "; ".join(f"slot {p['slot']}: " + ", ".join(filter(None, [f"cores {','.join(map(str, p['cores']))}" if p.get("cores") else "",
                                                                        str(p.get("device") or "")])) for p in self.pool.placements)
    self.write_line(f"rlspeedrun: {len(self.pool.placements)} runs at once ({self.pool.label}): {where}")

  def progress(self, rec: RunRecord, task) -> None:
    self.records.append(rec)
    self.write_line(run_line(rec, task))

  def _gate_summary(self, tr) -> None:
    """The regression gate's table (failing pairs first), its files, and a command per regressed pair."""
    import pandas as pd

    from bench.analysis.gate import failing_first, gate_table, regressed_lines
    tr.write_sep("-", f"regression gate against {self.baseline.label} (bench/analysis/gate.py; README: Did a change make training slower?)")
    if not self.gate_rows:
      tr.write_line("no pair had runs on both sides", yellow=True)
      return
    df = failing_first(pd.DataFrame(self.gate_rows))
    df.to_csv(os.path.join(self.dir, "gate.csv"), index=False)
    table = gate_table(df)
    with open(os.path.join(self.dir, "gate.md"), "w") as f:
      f.write(f"# Regression gate against {self.baseline.label}\n\n{table.to_markdown(index=False)}\n")
    tr.write_line(table.to_string(index=False))
    for line in regressed_lines(df, self.against): tr.write_line(line, red=True, bold=True)

  def summary(self, tr) -> None:
    """The end of the session: summary and verdict tables, warnings, where records and report are."""
    if not self.records: return
    from bench.analysis.report import summary_table, verdict_table, write_report
    tr.write_sep("=", "rlspeedrun: time-to-threshold (training clock, warm kernel cache)")
    runs = frame([{**asdict(r), "source_file": self.writer.path} for r in self.records])   # the referee's own, not the file
    tr.write_line(summary_table(runs).to_string(index=False))
    report, comparisons, warns = write_report(runs, self.dir, baseline=self.options.baseline,
                                              force=self.options.force_compare, sources=self.writer.path)
    if len(comparisons):
      tr.write_sep("-", "verdicts (bench/analysis/stats.py; PROTOCOL.md section 10)")
      tr.write_line(verdict_table(comparisons, bold=False).to_string(index=False))
    for w in warns: tr.write_line(f"warning: {w}", yellow=True)
    contended = [r for r in self.records if r.contended]
    if contended:
      tr.write_line(f"warning: {len(contended)} of {len(self.records)} runs were contended (the machine was shared: "
                    f"{contended[0].contended_why}); their times are not this machine's quiet speed (README: quiet runs)", yellow=True)
    sandboxes = sorted({r.sandbox for r in self.records})
    if sandboxes != ["bwrap"]: tr.write_line(f"warning: agents ran without a sandbox ({'; '.join(sandboxes)})", yellow=True)
    if self.baseline is not None: self._gate_summary(tr)
    tr.write_line(f"run records: {self.writer.path} ({self.writer.count} records; last line sha256 {self.writer.head})")
    pem = "".join(public_pem(self.signer.public).splitlines()[1:-1])
    tr.write_line(f"signed with: key {self.signer.key_id} ({self.signer.source}); public key {pem} (check: keep this line, "
                  "write the key where the records are not, as -----BEGIN PUBLIC KEY-----, the key, -----END PUBLIC KEY-----, "
                  f"then python -m bench.report --public-key THAT_FILE {self.dir})")
    tr.write_line(f"report:      {report} (+ PNGs beside it)")
    timer = str(getattr(self.config.option, "benchmark_timer", DEFAULT_TIMER))
    if DEFAULT_TIMER not in timer:
      tr.write_line(f"warning: --benchmark-timer is {timer}: pytest-benchmark's table is not time-to-threshold", yellow=True)
