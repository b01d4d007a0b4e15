"""Slots on a Ray cluster: `pytest bench/ --ray auto|ADDRESS` (the optional extra `ray`; README "Many runs at once").

Each slot is a Ray actor holding `--cores-per-run` CPUs (and one GPU when the agent's device is one) as Ray resources.
On its node the actor is the referee (bench/worker.py WorkerServer): it claims that many free cores there (bench/parallel.py
CoreLocks), pins itself and so its agent's sandboxed process to them, and runs the pair's warm-up and runs exactly as a
local slot does; its records, with the node's own hardware fingerprint, come back to the session's runs.jsonl as runs
finish. A node that dies under a run makes that run a failed record saying so (bench/parallel.py Pool).

Every node must have this checkout at the same path, at the same commit, set up with scripts/setup.sh, and its Ray
started from that .venv (`.venv/bin/ray start ...`): the actor imports the project from there and refuses to run
when the node's commit is not the session's.
"""
from __future__ import annotations

import os
import platform

import ray

from bench import ROOT
from bench.parallel import CoreLocks, PlacementError, SlotDied, allowed_cores, pin_process, slot_referee

GPU_ENV = {f"RAY_EXPERIMENTAL_NOSET_{v}": "1" for v in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")}


def connect(address: str) -> str:
  """Join the cluster at `address`; `auto`: the one this machine belongs to (`ray start`), else a new local one on this
  process's cores. Returns a line saying which."""
  env = {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])), **GPU_ENV}
  kw = dict(runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False, configure_logging=False)
  if address == "auto":
    try: ray.init(address="auto", **kw)
    except ConnectionError:
      ray.init(num_cpus=len(allowed_cores()), **kw)
      return f"a local Ray cluster started for this session ({len(allowed_cores())} CPUs)"
  else: ray.init(address=address, **kw)
  res = ray.cluster_resources()
  return f"Ray cluster at {address}: {len(ray.nodes())} nodes, {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"


def capacity(cores_per_run: int, gpu: bool) -> int:
  """How many slots the cluster's resources hold: one per GPU, or one per `cores_per_run` CPUs of each node."""
  n = 0
  for node in ray.nodes():
    if not node.get("Alive"): continue
    res = node.get("Resources", {})
    n += int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 0)) // cores_per_run
  return n


def plan(workers: int | None, device: str | None, cores_per_run: int) -> list[dict]:
  gpu = (device or "CPU").split(":")[0].upper() != "CPU"
  if gpu and ":" in device: raise PlacementError(f"--ray with --agent-device {device}: Ray gives each run a GPU; name the kind only (CUDA, AMD)")
  have = capacity(cores_per_run, gpu)
  n = workers or have
  if n < 1 or n > have:
    raise PlacementError(f"the Ray cluster holds {have} runs at once of {'1 GPU' if gpu else f'{cores_per_run} CPUs'} each; "
                         f"{n} asked (--workers)")
  return [{"slot": i, "workers": n, "device": device, "cores_per_run": cores_per_run, "gpu": gpu} for i in range(n)]


@ray.remote(max_restarts=0, max_task_retries=0)
class SlotActor:
  """The referee of one (agent, task) on a node, on cores (and a GPU) of its own."""
  def __init__(self, agent: str, task: str, referee: dict, placement: dict, commit: str | None):
    from bench.referee.records import git_info
    from bench.worker import WorkerServer
    here = git_info().get("commit")
    if commit and here != commit:
      raise RuntimeError(f"node {platform.node()}: the project at {ROOT} is at commit {here}, the session's is {commit}")
    self.locks = CoreLocks()
    cores = self.locks.take_free(placement["cores_per_run"], allowed_cores())
    pin_process(cores)
    device = placement["device"]
    if placement["gpu"]: device = f"{device.split(':')[0]}:{int(ray.get_gpu_ids()[0])}"
    self.placement = {"slot": placement["slot"], "workers": placement["workers"], "cores": cores, "device": device,
                      "scheduler": "ray", "host": platform.node(), "node_id": ray.get_runtime_context().get_node_id()}
    # its records go back to the session, which writes them
    self.server = WorkerServer(agent, task, slot_referee(referee, self.placement), records=None)

  def where(self) -> dict: return self.placement

  def call(self, line: str) -> dict: return self.server.handle(line)


class RaySlot:
  """The session's side of one SlotActor: its calls, and the actor's death as SlotDied."""
  def __init__(self, placement: dict, agent, task, referee, scratch: str):
    from bench.referee.records import git_info
    from bench.worker_client import agent_arg
    fields = referee.to_json()
    self.placement = {"slot": placement["slot"], "workers": placement["workers"], "device": placement["device"], "scheduler": "ray"}
    self.actor = SlotActor.options(num_cpus=placement["cores_per_run"], num_gpus=1 if placement["gpu"] else 0).remote(
      agent_arg(agent), task.name, fields, placement, git_info().get("commit"))
    try: self.placement = ray.get(self.actor.where.remote(), timeout=referee.startup_timeout_s)
    except ray.exceptions.GetTimeoutError:
      ray.kill(self.actor)
      raise SlotDied(f"no Ray node gave slot {placement['slot']} its resources within {referee.startup_timeout_s:g} s") from None
    except ray.exceptions.RayError as e: raise SlotDied(f"slot {placement['slot']}'s Ray actor could not start: {_first_lines(e)}") from None

  def call(self, line: str) -> dict:
    try: return ray.get(self.actor.call.remote(line))
    except ray.exceptions.RayActorError as e:
      raise SlotDied(f"the Ray actor of slot {self.placement['slot']} on {self.placement.get('host', '?')} died during {line!r}: "
                     f"{_first_lines(e)}") from None

  def close(self) -> None:
    ray.kill(self.actor)     # its process, and with it its agent's sandbox (--die-with-parent) and its cores' locks


def _first_lines(e: Exception, n: int = 12) -> str:
  return " ".join(line.strip() for line in str(e).splitlines()[:n] if line.strip())
