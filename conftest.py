"""pytest options of the benchmark (`pytest bench/ --help`, section "rlspeedrun"), and the session
report: a summary and verdict table in the terminal, run records and report.md with PNGs under results/."""
from __future__ import annotations

import argparse
import os
import platform
from datetime import datetime

import pytest

DEFAULT_TIMER = "bench.clock.training_timer"
KNOWN_DEVICES = ("CPU", "CUDA", "NV", "AMD", "METAL", "CL", "QCOM", "WEBGPU", "PYTHON", "NULL", "DSP", "DISK", "REMOTE")


def pytest_addoption(parser):
  g = parser.getgroup("rlspeedrun", "rlspeedrun benchmark (pytest bench/)")
  g.addoption("--agent", action="append", default=[], metavar="AGENT",
              help="agent to run: a reference or peer name (ppo, dqn, sac, sb3-ppo, ...), an installed entry point "
                   "(group rlspeedrun.agents), 'pkg.module:Class' or 'path/to/file.py:Class', optionally as NAME=AGENT; "
                   "repeatable. Default: each task's reference agents")
  g.addoption("--with-references", action="store_true",
              help="also run each task's reference agents beside the --agent entries (the comparison a bounty needs)")
  g.addoption("--baseline", default=None, metavar="AGENT",
              help="agent that the report compares every other agent with (default: the fastest reference agent per task)")
  g.addoption("--force-compare", action="store_true",
              help="give verdicts even when the compared runs' hardware fingerprints differ")
  g.addoption("--task", action="append", default=[], metavar="TASK", help="task to run (repeatable). Default: the tier's tasks")
  g.addoption("--tier", default="quick", help="task tier (default: quick)")
  g.addoption("--seeds", type=int, default=5, metavar="N", help="timed runs per (agent, task): seeds 0..N-1 (default: 5)")
  g.addoption("--device", default="CPU", help="tinygrad device for the agent's process, as DEV= (CPU, CUDA, AMD, 'AMD:2', ...). Default: CPU")
  g.addoption("--results-dir", default="results", help="where run records and plots go (default: results/)")
  g.addoption("--cold-start", action=argparse.BooleanOptionalAction, default=True,
              help="also time one run per (agent, task) with an empty kernel cache, reported apart (default: on)")
  g.addoption("--hang-timeout", type=float, default=300.0, metavar="S",
              help="seconds without a reply from the agent's process (outside its time budget) before it is killed as hung")
  g.addoption("--eval-seed", type=int, default=None, metavar="N",
              help="fix the referee's evaluation seed root (to reproduce a run); default: secret, drawn per run")
  g.addoption("--sandbox", default="auto", choices=("auto", "bwrap", "none"),
              help="the agent's sandbox: bwrap where it works, else none and verdicts on entries refused (auto); "
                   "bwrap required (bwrap); off (none). Default: %(default)r")
  g.addoption("--agent-memory-gb", type=float, default=8.0, metavar="GB",
              help="address-space limit of each agent process on the CPU device, in GiB (default: %(default)r)")
  g.addoption("--act-allowance-ms", type=float, default=2.0, metavar="MS",
              help="act() time per call not charged to the training clock; beyond it, charged (default: %(default)r)")


def _check_device(device: str) -> None:
  base = device.split(":")[0].upper()
  if base not in KNOWN_DEVICES:
    raise pytest.UsageError(f"unknown --device {device!r}: expected one of {', '.join(KNOWN_DEVICES)} (optionally ':N' or ':RENDERER')")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
  # pytest-benchmark's statistics are about time-to-threshold: its timer is the referee's training clock
  if hasattr(config.option, "benchmark_timer") and "perf_counter" in str(config.option.benchmark_timer):
    config.option.benchmark_timer = DEFAULT_TIMER
  if config.getoption("--seeds") < 1: raise pytest.UsageError("--seeds must be at least 1")
  _check_device(config.getoption("--device"))
  from bench.sandbox import SandboxError, probe
  try: probe(config.getoption("--sandbox"))
  except SandboxError as e: raise pytest.UsageError(f"--sandbox bwrap: {e}") from None


def pytest_generate_tests(metafunc):
  if not {"agent_spec", "task"} <= set(metafunc.fixturenames): return
  from bench.agent_api import AgentError, resolve_agent
  from envs import get_task, tasks_in_tier
  cfg = metafunc.config
  try:
    tasks = [get_task(t) for t in cfg.getoption("--task")] or tasks_in_tier(cfg.getoption("--tier"))
    agent_names = cfg.getoption("--agent")
    resolved: dict = {}      # each name resolved once (entry points scanned, source found), whatever the tasks
    pairs = []
    for t in tasks:
      names = list(t.agents) if cfg.getoption("--with-references") or not agent_names else []
      names += [a for a in agent_names if a not in names]
      for a in names:
        if a not in resolved: resolved[a] = resolve_agent(a)
      specs = [resolved[a] for a in names]
      dup = {s.name for s in specs if sum(x.name == s.name for x in specs) > 1}
      if dup: raise AgentError(f"two agents are called {', '.join(sorted(dup))}: name one with --agent NAME=AGENT")
      pairs += [(s, t) for s in specs]
  except (KeyError, AgentError) as e:
    raise pytest.UsageError(str(e).strip('"')) from None
  metafunc.parametrize(("agent_spec", "task"), pairs, ids=[f"{a.name}-{t.name}" for a, t in pairs])


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


class BenchSession:
  """What one `pytest bench/` session shares: the referee's settings, the records file, the runs."""
  def __init__(self, config):
    from bench.records import RecordWriter
    from bench.runner import RefereeConfig
    self.config = config
    results = config.getoption("--results-dir")
    self.referee = RefereeConfig(device=config.getoption("--device"), hang_timeout_s=config.getoption("--hang-timeout"),
                                 eval_seed=config.getoption("--eval-seed"), sandbox=config.getoption("--sandbox"),
                                 hidden_dirs=(os.path.abspath(results),), memory_limit_gb=config.getoption("--agent-memory-gb"),
                                 act_allowance_ms=config.getoption("--act-allowance-ms"))
    self.seeds = list(range(config.getoption("--seeds")))
    self.cold_start = config.getoption("--cold-start")
    self.dir = new_session_dir(results)
    self.writer = RecordWriter(os.path.join(self.dir, "runs.jsonl"))
    self.records = []
    self.reporter = config.pluginmanager.get_plugin("terminalreporter")

  def progress(self, rec) -> None:
    self.records.append(rec)
    if rec.solved:
      what = (f"solved in {rec.time_to_threshold_s:.2f} s, {rec.steps_to_threshold:,} steps "
              f"(confirmation {rec.confirmation_return:.1f})")
    else:
      what = f"{rec.status.upper()} after {rec.training_clock_s:.2f} s, {rec.steps:,} steps: {rec.failure_reason.splitlines()[0]}"
    line = f"[{rec.agent} · {rec.task} · seed {rec.seed} · {rec.kernel_cache} cache] {what}"
    capman = self.config.pluginmanager.get_plugin("capturemanager")
    if self.reporter and capman:
      with capman.global_and_fixture_disabled():
        self.reporter.ensure_newline()
        self.reporter.write_line(line)
    else:
      print(line, flush=True)


@pytest.fixture(scope="session")
def bench_session(request):
  return _session(request.config)


def _session(config) -> BenchSession:
  if not hasattr(config, "_rlspeedrun"): config._rlspeedrun = BenchSession(config)
  return config._rlspeedrun


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  bs = getattr(config, "_rlspeedrun", None)
  if bs is None or not bs.records: return
  from dataclasses import asdict
  from bench.report import summary_table, verdict_table, write_report
  from bench.records import frame
  tr = terminalreporter
  tr.write_sep("=", "rlspeedrun: time-to-threshold (training clock, warm kernel cache)")
  runs = frame([{**asdict(r), "source_file": bs.writer.path} for r in bs.records])   # the referee's own, not the file
  tr.write_line(summary_table(runs).to_string(index=False))
  report, comparisons, warns = write_report(runs, bs.dir, baseline=config.getoption("--baseline"),
                                            force=config.getoption("--force-compare"), sources=bs.writer.path)
  if len(comparisons):
    tr.write_sep("-", "verdicts (bench/stats.py; PROTOCOL.md section 10)")
    tr.write_line(verdict_table(comparisons, bold=False).to_string(index=False))
  for w in warns: tr.write_line(f"warning: {w}", yellow=True)
  sandboxes = sorted({r.sandbox for r in bs.records})
  if sandboxes != ["bwrap"]: tr.write_line(f"warning: agents ran without a sandbox ({'; '.join(sandboxes)})", yellow=True)
  tr.write_line(f"run records: {bs.writer.path} ({bs.writer.count} records; last line sha256 {bs.writer.head})")
  tr.write_line(f"report:      {report} (+ PNGs beside it)")
  timer = str(getattr(config.option, "benchmark_timer", DEFAULT_TIMER))
  if DEFAULT_TIMER not in timer:
    tr.write_line(f"warning: --benchmark-timer is {timer}: pytest-benchmark's table is not time-to-threshold", yellow=True)
