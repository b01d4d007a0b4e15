"""The tree as the README's Architecture section and CONTRIBUTING.md describe it: no import cycle, every module named
there, the referee's room importing neither other room, nothing on the run path loading pandas, short functions."""
import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "agents", "envs")
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
  out = {}
  for pkg in PACKAGES:
    for p in (ROOT / pkg).rglob("*.py"):
      name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
      out[name.removesuffix(".__init__")] = p
  return out


def imports(name: str, path: Path, known: dict) -> set[str]:
  """The project's modules `name` imports, at its top or inside a function (a lazy import is still a dependency)."""
  pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level: base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
      found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    elif isinstance(node, ast.Import): found |= {a.name for a in node.names}
  return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
  known = modules()
  return {name: imports(name, path, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan), or of one that imports itself."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in g.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while (w := stack.pop()) != v: comp.append(w); on.discard(w)
      on.discard(v)
      comp.append(v)
      if len(comp) > 1: out.append(sorted(comp))
  for v in sorted(g):
    if v not in index: visit(v)
  return out


def test_cycles_are_found():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere():
  assert cycles(graph()) == [], "an import cycle: break it by moving what both sides need into a module of its own"


def test_the_referee_room_imports_neither_the_analysis_nor_the_orchestration():
  """What is measured (bench/referee/) depends on nothing that only reads or schedules runs (CONTRIBUTING.md)."""
  allowed = ("bench.referee", "bench.peers", "agents", "envs")
  bad = {(m, d) for m, deps in graph().items() if m.startswith("bench.referee")
         for d in deps if d != "bench" and not d.startswith(allowed)}
  assert not bad, sorted(bad)


def test_the_analysis_room_imports_no_orchestration():
  bad = {(m, d) for m, deps in graph().items() if m.startswith("bench.analysis")
         for d in deps if d != "bench" and not d.startswith(("bench.analysis", "bench.referee"))}
  assert not bad, sorted(bad)


def test_agents_never_import_bench():
  bad = {(m, d) for m, deps in graph().items() if m.startswith(("agents", "envs")) for d in deps if d.startswith("bench")}
  assert not bad, sorted(bad)


def test_every_bench_module_is_named_in_the_readme_architecture():
  readme = (ROOT / "README.md").read_text()
  arch = readme[readme.index("## Architecture"):readme.index("\n## ", readme.index("## Architecture") + 5)]
  missing = [str(p.relative_to(ROOT)) for n, p in modules().items()
             if n.startswith("bench") and not n.startswith("bench.peers.") and p.name != "__init__.py" and p.name not in arch]
  assert not missing, f"not named in README.md's Architecture section: {missing}"


def test_no_function_in_bench_is_over_60_lines():
  long = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
          for p in (ROOT / "bench").rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
          if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
  assert not long, long


def test_the_run_path_never_loads_pandas():
  """A worker process (and the agent's own) stays small: the record loaders that need pandas are bench/analysis/'s."""
  code = ("import sys; from bench.worker import WorkerServer; import bench.referee.agent_host, bench.worker_client\n"
          "w = WorkerServer('ppo', 'CartPole-v1', {'sandbox': 'none'}, None); w.close()\n"
          "print(sorted(m for m in ('pandas', 'matplotlib', 'scipy') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_old_command_lines_and_imports_still_work():
  """Users' scripts and older commits call `python -m bench.report` and the rest, import from them, and name
  pytest-benchmark's timer `bench.clock.training_timer`: the forwards keep all three."""
  from bench.clock import training_timer
  from bench.gate import gate_runs
  from bench.referee.clock import training_timer as timer
  from bench.report import write_report
  from bench.signing import Signer
  assert training_timer is timer and callable(gate_runs) and callable(write_report) and callable(Signer)
  for name in ("report", "gate", "history", "baseline", "signing", "worker"):
    out = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and f"python -m bench.{name}" in out.stdout, (name, out.stdout[-500:], out.stderr[-500:])
