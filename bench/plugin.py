"""The pytest plugin of `pytest bench/`: its options (section "rlspeedrun" of `pytest bench/ --help`), their checks,
one test per (agent, task) and the session report at the end. Loaded by the root conftest.py; the session's state
and output live in bench/session.py, the test itself in bench/test_time_to_threshold.py."""
from __future__ import annotations

import argparse

import pytest

from bench.options import options
from bench.referee.clock import DEFAULT_TIMER
from bench.referee.config import DEFAULTS

KNOWN_DEVICES = ("CPU", "CUDA", "NV", "AMD", "METAL", "CL", "QCOM", "WEBGPU", "PYTHON", "NULL", "DSP", "DISK", "REMOTE")


def device(s: str) -> str:
  """A tinygrad device as DEV= takes it: CPU, CUDA, 'AMD:2', ..."""
  if s.split(":")[0].upper() not in KNOWN_DEVICES:
    raise argparse.ArgumentTypeError(f"unknown device {s!r}: expected one of {', '.join(KNOWN_DEVICES)} (optionally ':N' or ':RENDERER')")
  return s


def devices(s: str) -> list[str]:
  """A comma-separated list of devices, one per run at once: 'AMD:0,AMD:2'."""
  out = [device(d.strip()) for d in s.split(",") if d.strip()]
  if not out: raise argparse.ArgumentTypeError("no device named")
  if len(set(out)) < len(out): raise argparse.ArgumentTypeError(f"a device named twice in {s!r}: runs side by side never share one")
  return out


def positive_int(s: str) -> int:
  try: n = int(s)
  except ValueError: raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
  if n < 1: raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
  return n


def _float_at_least(low: float, strict: bool):
  """An argparse type: a float over `low` (strict) or at least `low`."""
  def parse(s: str) -> float:
    try: x = float(s)
    except ValueError: raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not (x > low if strict else x >= low): raise argparse.ArgumentTypeError(f"must be {'more than' if strict else 'at least'} {low:g}, got {s}")
    return x
  return parse


positive_float, non_negative_float = _float_at_least(0.0, strict=True), _float_at_least(0.0, strict=False)


def probability(s: str) -> float:
  """A level strictly between 0 and 1."""
  x = positive_float(s)
  if x >= 1: raise argparse.ArgumentTypeError(f"must be under 1, got {s}")
  return x


def pytest_addoption(parser):
  # names checked against the plugins a user is likely to have beside this one (pytest-playwright has --device and
  # --output, pytest-split --group, pytest-repeat --count, pytest-timeout --timeout): none of ours is theirs
  g = parser.getgroup("rlspeedrun", "rlspeedrun benchmark (pytest bench/)")
  g.addoption("--agent", dest="rl_agent", action="append", default=[], metavar="AGENT",
              help="agent to run: a reference or peer name (ppo, dqn, sac, sb3-ppo, ...), an installed entry point "
                   "(group rlspeedrun.agents), 'pkg.module:Class' or 'path/to/file.py:Class', optionally as NAME=AGENT; "
                   "repeatable. Default: each task's reference agents")
  g.addoption("--with-references", dest="rl_with_references", action="store_true",
              help="also run each task's reference agents beside the --agent entries (the comparison a bounty needs)")
  g.addoption("--baseline", dest="rl_baseline", default=None, metavar="AGENT",
              help="agent that the report compares every other agent with (default: the fastest reference agent per task)")
  g.addoption("--force-compare", dest="rl_force_compare", action="store_true",
              help="give verdicts even when the compared runs' hardware fingerprints differ or an entry ran unsandboxed")
  g.addoption("--task", dest="rl_task", action="append", default=[], metavar="TASK",
              help="task to run (repeatable). Default: the tier's tasks")
  g.addoption("--tier", dest="rl_tier", default="quick", help="task tier: quick, standard or hard (default: %(default)r)")
  g.addoption("--seeds", dest="rl_seeds", type=positive_int, default=5, metavar="N",
              help="timed runs per (agent, task): seeds 0..N-1 (default: %(default)r; 10 for a verdict you publish)")
  g.addoption("--agent-device", dest="rl_agent_device", type=device, default=DEFAULTS.device, metavar="DEV",
              help="tinygrad device of the agent's process, as DEV= (CPU, CUDA, AMD, 'AMD:2', ...) (default: %(default)r)")
  g.addoption("--results-dir", dest="rl_results_dir", default="results", metavar="DIR",
              help="where run records, report.md and the PNGs go, one folder per session (default: %(default)r)")
  g.addoption("--cold-start", dest="rl_cold_start", action=argparse.BooleanOptionalAction, default=True,
              help="also time one run per (agent, task) with an empty kernel cache, reported apart (default: %(default)r)")
  g.addoption("--hang-timeout", dest="rl_hang_timeout", type=positive_float, default=DEFAULTS.hang_timeout_s, metavar="S",
              help="seconds without a reply from the agent's process (outside its time budget) before it is killed as "
                   "hung (default: %(default)r)")
  g.addoption("--eval-seed", dest="rl_eval_seed", type=int, default=None, metavar="N",
              help="fix the referee's evaluation seed root (to reproduce a run); default: secret, drawn per run")
  g.addoption("--sandbox", dest="rl_sandbox", default=DEFAULTS.sandbox, choices=("bwrap", "none"),
              help="the agent's sandbox: bwrap, its own uid, no capability (bench/referee/sandbox.py; the session refuses to start "
                   "where it cannot be made); none: off, every record says so and entries get no verdict (default: %(default)r)")
  g.addoption("--agent-memory-gb", dest="rl_agent_memory_gb", type=positive_float, default=DEFAULTS.memory_limit_gb, metavar="GB",
              help="memory of each agent process tree (its cgroup) and address space of each of its processes on the CPU device, "
                   "in GiB (default: %(default)r)")
  g.addoption("--signing-key", dest="rl_signing_key", default=None, metavar="PEM",
              help="sign every record with this Ed25519 private key (python -m bench.signing new PATH; mode 0600); default: a "
                   "key of the session's own, kept in memory only, its public half beside the records and printed")
  g.addoption("--eval-cpu-cap", dest="rl_eval_cpu_cap", type=non_negative_float, default=DEFAULTS.eval_cpu_cap_s, metavar="S",
              help="CPU-seconds an evaluator's processes may use in one evaluation; over it, the run fails (default: %(default)r)")
  _gate_options(g)
  _placement_options(g)


def _gate_options(g) -> None:
  from bench.analysis.gate import GATE_ALPHA, GATE_TOLERANCE
  g.addoption("--regress-against", dest="rl_regress_against", default=None, metavar="BASELINE",
              help="regression gate: compare every (agent, task) with BASELINE, a git ref (that version of the project "
                   "runs interleaved with this one, same seeds) or stored runs (a session directory, a runs.jsonl, or a "
                   "name saved with python -m bench.baseline); fail only on a regression (README)")
  g.addoption("--gate-alpha", dest="rl_gate_alpha", type=probability, default=GATE_ALPHA, metavar="P",
              help="regression gate: one-sided Mann-Whitney level a slowdown must reach (default: %(default)r)")
  g.addoption("--gate-tolerance", dest="rl_gate_tolerance", type=non_negative_float, default=GATE_TOLERANCE, metavar="F",
              help="regression gate: the slowdown the whole CI of the ratio of medians must exceed (default: %(default)r)")
  g.addoption("--confirm-regressions", dest="rl_confirm_regressions", action="store_true",
              help="regression gate: rerun a pair that regressed (both sides when interleaved); it fails only if the "
                   "rerun regresses too (a false alarm's chance goes from alpha to about alpha squared)")


def _placement_options(g) -> None:
  g.addoption("--workers", dest="rl_workers", type=positive_int, default=None, metavar="N",
              help="runs at once on this machine, each pinned to its own cores (and on a GPU its own device: --agent-device "
                   "AMD gives AMD:0 ... AMD:N-1); with --ray, at most N at once on the cluster (default: one at a time; "
                   "with --ray, as many as the cluster holds)")
  g.addoption("--devices", dest="rl_devices", type=devices, default=None, metavar="DEV,DEV",
              help="one device per run at once, e.g. AMD:0,AMD:2 (implies --workers as many)")
  g.addoption("--cores-per-run", dest="rl_cores_per_run", type=positive_int, default=None, metavar="K",
              help="cores pinned to each run at once (default: this machine's cores shared out evenly; with --ray: 1)")
  g.addoption("--ray", dest="rl_ray", default=None, metavar="ADDRESS",
              help="run every run on a Ray cluster (extra 'ray'): ADDRESS of its head, or 'auto' (the cluster this machine "
                   "joined with `ray start`, else a local one); README 'Many runs at once'")



@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
  # pytest-benchmark's statistics are about time-to-threshold: its timer is the referee's training clock
  if hasattr(config.option, "benchmark_timer") and "perf_counter" in str(config.option.benchmark_timer):
    config.option.benchmark_timer = DEFAULT_TIMER
  # a test whose warm-up failed never reaches the benchmark fixture: its failure says why, this warning nothing
  config.addinivalue_line("filterwarnings", "ignore:Benchmark fixture was not used at all in this test")
  if config.option.help: return
  from bench.referee.sandbox import SandboxError, probe
  opts = options(config)
  try: probe(opts.sandbox)
  except SandboxError as e: raise pytest.UsageError(f"no sandbox for the agents: {e}; or run with --sandbox none "
                                                    "(every record then says so, and entries get no verdict)") from None
  if opts.signing_key:
    from bench.referee.signing import Signer
    try: config._rlspeedrun_signer = Signer.from_file(opts.signing_key)
    except (OSError, ValueError) as e: raise pytest.UsageError(f"--signing-key: {e}") from None
  if opts.workers or opts.devices or opts.ray: config._rlspeedrun_pool = make_pool(config)
  if opts.regress_against:
    from bench.regress import BaselineError, resolve
    try: config._rlspeedrun_baseline = resolve(opts.regress_against)
    except BaselineError as e: raise pytest.UsageError(str(e)) from None


def make_pool(config):
  """The slots of --workers / --devices / --ray (bench/parallel.py), or None for one run at a time."""
  opts = options(config)
  workers, devs, cores, address = opts.workers, opts.devices, opts.cores_per_run, opts.ray
  if opts.regress_against:
    raise pytest.UsageError("--regress-against runs the two versions interleaved, one run at a time: not with --workers, --devices or --ray")
  from bench.parallel import CoreLocks, LocalSlot, PlacementError, Pool, plan
  try:
    if address:
      import importlib.util
      if importlib.util.find_spec("ray") is None: raise pytest.UsageError("--ray needs Ray: pip install -e '.[ray]'")
      from bench import ray_slots
      if devs: raise pytest.UsageError("--devices is for this machine's devices; on Ray each run gets a GPU from the cluster (--agent-device CUDA)")
      where = ray_slots.connect(address)
      placements = ray_slots.plan(workers, opts.agent_device, cores or 1)
      return Pool(placements, ray_slots.RaySlot, label=where)
    placements = plan(workers or 1, opts.agent_device, devs, cores)
    if len(placements) == 1 and not devs and not cores: return None       # --workers 1: the plain session
    config._rlspeedrun_cores = CoreLocks()
    config._rlspeedrun_cores.take_all([c for p in placements for c in p["cores"]])
    return Pool(placements, LocalSlot, label=f"{len(placements)} local slots")
  except PlacementError as e: raise pytest.UsageError(str(e)) from None


def pytest_unconfigure(config):
  base = getattr(config, "_rlspeedrun_baseline", None)
  if base is not None and hasattr(base, "close"): base.close()
  if getattr(config, "_rlspeedrun_cores", None) is not None: config._rlspeedrun_cores.close()
  if getattr(config, "_rlspeedrun_pool", None) is not None and options(config).ray:
    import ray
    ray.shutdown()


def pytest_generate_tests(metafunc):
  if not {"agent_spec", "task"} <= set(metafunc.fixturenames): return
  from bench.referee.agent_api import AgentError, resolve_agent
  from envs import get_task, tasks_in_tier
  opts = options(metafunc.config)
  try:
    tasks = [get_task(t) for t in opts.task] or tasks_in_tier(opts.tier)
    agent_names = opts.agent
    resolved: dict = {}      # each name resolved once (entry points scanned, source found), whatever the tasks
    pairs = []
    for t in tasks:
      names = list(t.agents) if opts.with_references or not agent_names else []
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


@pytest.fixture(scope="session")
def bench_session(request):
  return session_of(request.config)


def session_of(config):
  """The session's BenchSession (bench/session.py), made on first use (a session that collects no benchmark makes none)."""
  from bench.session import BenchSession
  if not hasattr(config, "_rlspeedrun"): config._rlspeedrun = BenchSession(config)
  return config._rlspeedrun


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  bs = getattr(config, "_rlspeedrun", None)
  if bs is not None: bs.summary(terminalreporter)
