"""Reference agents, one file each. An agent is a class `Agent(task, seed)` with `train()` (a generator
yielding cumulative env steps after each update) and `act(obs_batch) -> actions`; see bench/referee/agent_api.py.
Each runs on its own: `python -m agents.ppo --task CartPole-v1 --seed 0` (agents/run.py)."""

# name -> "module:Class"; these names are accepted by `--agent` (peers, other libraries: bench/peers/)
REFERENCE_AGENTS: dict[str, str] = {
  "ppo": "agents.ppo:PPO",
  "ppo_jit": "agents.ppo_jit:PPOJit",
  "dqn": "agents.dqn:DQN",
  "sac": "agents.sac:SAC",
}
# the environment variables that override a reference's Config (agents/common.py overridden): a run made with one set is
# not the reference's, and its record says so (bench/referee/records.py AGENT_VARS)
CONFIG_VARS = ("PPO_CONFIG", "PPO_JIT_CONFIG", "DQN_CONFIG", "SAC_CONFIG")


def load_class(target: str) -> type:
  """The class a target names: 'package.module:Class' or 'path/to/file.py:Class' (a file is imported under a name of its
  own, so that two entries called entry.py do not collide); a reference name (ppo, dqn, sac) is looked up first."""
  import hashlib
  import importlib
  import importlib.util
  import sys
  target = REFERENCE_AGENTS.get(target, target)
  if ":" not in target:
    raise ValueError(f"{target!r}: expected 'package.module:Class', 'path/to/file.py:Class' or one of {', '.join(REFERENCE_AGENTS)}")
  where, cls_name = target.rsplit(":", 1)
  if where.endswith(".py"):
    mod_name = "rlspeedrun_entry_" + hashlib.sha1(where.encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(mod_name, where)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
  else:
    module = importlib.import_module(where)
  cls = getattr(module, cls_name, None)
  if cls is None: raise AttributeError(f"{where} has no attribute {cls_name!r}")
  return cls
