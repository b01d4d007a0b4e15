"""Named baselines for the regression gate: stored runs of one machine, meant to be committed.

  python -m bench.baseline save NAME [SESSION ...]   copy sessions' records (default: the newest session under
                                                     results/) to results/baselines/NAME/, with meta.json
  python -m bench.baseline list                      what is saved: machine, tinygrad, project commit, runs

Then `pytest bench/ --regress-against NAME` compares with it (bench/regress.py). A baseline belongs to one machine: the
gate refuses another machine's fingerprint, and runs whose speed calibration differs by more than the tolerance.
Each session's runs.jsonl is copied whole (its hash chain intact), never merged or edited.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from datetime import UTC, datetime

from bench import ROOT
from bench.referee.records import TamperedRecords, git_info, read_records

BASELINES_DIR = os.path.join(ROOT, "results", "baselines")   # named baselines: python -m bench.baseline save NAME


def newest_session(results: str) -> str:
  sessions = sorted((d for d in os.listdir(results) if os.path.isfile(os.path.join(results, d, "runs.jsonl"))),
                    key=lambda d: os.path.getmtime(os.path.join(results, d, "runs.jsonl")))
  if not sessions: raise FileNotFoundError(f"no session (a folder with runs.jsonl) under {results}")
  return os.path.join(results, sessions[-1])


def meta_of(records: list[dict], sessions: list[str]) -> dict:
  """What a reader of the baseline must know without opening the runs."""
  def distinct(key, sub=None):
    return sorted({str(r.get(key, {}).get(sub) if sub else r.get(key)) for r in records})
  return {"created": datetime.now(UTC).isoformat(timespec="seconds"), "sessions": [os.path.basename(s.rstrip("/")) for s in sessions],
          "runs": sum(r["role"] == "timed" for r in records),
          "pairs": sorted({f"{r['agent']} on {r['task']}" for r in records if r["role"] == "timed"}),
          "machines": sorted({f"{r['fingerprint'].get('cpu')}, {r['fingerprint'].get('cores')} cores, gpu {r['fingerprint'].get('gpu')}, "
                              f"host {r['fingerprint'].get('host')}" for r in records}),
          "devices": distinct("device"), "tinygrad_version": distinct("fingerprint", "tinygrad_version"),
          "tinygrad_commit": distinct("fingerprint", "tinygrad_commit"), "project_commit": distinct("git", "commit"),
          "calibration_s": statistics.median(cal) if (cal := [r["calibration"]["score_s"] for r in records
                                                              if r.get("calibration", {}).get("score_s")]) else None,
          "contended_runs": sum(bool(r.get("contended")) for r in records), "saved_from_commit": git_info().get("commit")}


def save(name: str, sessions: list[str], root: str = BASELINES_DIR, force: bool = False) -> str:
  if not name or os.sep in name or name.startswith("."): raise ValueError(f"baseline name {name!r}: one plain folder name")
  dest = os.path.join(root, name)
  if os.path.exists(dest) and not force: raise FileExistsError(f"{dest} exists: choose another name, or --force to replace it")
  records, files = [], []
  for s in sessions:
    path = os.path.join(s, "runs.jsonl") if os.path.isdir(s) else s
    records += read_records(path)          # refuses a broken hash chain
    files.append(path)
  if not any(r["role"] == "timed" for r in records): raise ValueError(f"no timed runs in {', '.join(sessions)}")
  if os.path.exists(dest): shutil.rmtree(dest)
  for path in files:
    session = os.path.join(dest, os.path.basename(os.path.dirname(os.path.abspath(path))))
    os.makedirs(session, exist_ok=True)
    shutil.copyfile(path, os.path.join(session, "runs.jsonl"))
  with open(os.path.join(dest, "meta.json"), "w") as f: json.dump(meta_of(records, sessions), f, indent=1)
  return dest


def listing(root: str = BASELINES_DIR) -> list[str]:
  out = []
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    try:
      with open(os.path.join(root, name, "meta.json")) as f: m = json.load(f)
    except (OSError, ValueError): continue
    out.append(f"{name}: {m['runs']} runs ({'; '.join(m['pairs'])}), saved {m['created']}\n"
               f"  machine {'; '.join(m['machines'])}; device {', '.join(m['devices'])}\n"
               f"  tinygrad {', '.join(m['tinygrad_version'])} (commit {', '.join(c[:10] for c in m['tinygrad_commit'])}); "
               f"project {', '.join(c[:10] for c in m['project_commit'])}; calibration {m['calibration_s']} s")
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd", required=True)
  s = sub.add_parser("save", help="save sessions as a named baseline")
  s.add_argument("name")
  s.add_argument("sessions", nargs="*", help="session directories or runs.jsonl files (default: the newest under --results-dir)")
  s.add_argument("--results-dir", default="results", help="where sessions are (default: %(default)r)")
  s.add_argument("--force", action="store_true", help="replace a baseline of that name")
  sub.add_parser("list", help="the saved baselines")
  args = p.parse_args(argv)
  if args.cmd == "list":
    lines = listing()
    print("\n".join(lines) if lines else f"no baselines under {BASELINES_DIR} (python -m bench.baseline save NAME)")
    return 0
  try:
    dest = save(args.name, args.sessions or [newest_session(args.results_dir)], force=args.force)
  except (OSError, ValueError, TamperedRecords) as e:
    print(f"refused: {e}", file=sys.stderr)
    return 2
  print(f"saved {dest}: pytest bench/ --regress-against {args.name}  (commit it: git add {os.path.relpath(dest)})")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
