"""Peers: agents of other libraries (optional extras), "what a user would pick instead"; named like references."""

PEER_AGENTS: dict[str, str] = {
  "sb3-ppo": "bench.peers.sb3:SB3PPO",
  "sb3-dqn": "bench.peers.sb3:SB3DQN",
  "sb3-sac": "bench.peers.sb3:SB3SAC",
  "sbx-ppo": "bench.peers.sbx:SBXPPO",
  "sbx-dqn": "bench.peers.sbx:SBXDQN",
  "sbx-sac": "bench.peers.sbx:SBXSAC",
  "rltools-sac": "bench.peers.rltools:RLtoolsSAC",
}
# the environment variables that change a peer's settings (bench/peers/sb3.py: torch's threads), recorded with each run
PEER_VARS = ("PEER_TORCH_THREADS",)
# libraries each peer imports, loaded before the clock starts like tinygrad for the reference agents
_SB3 = ("greenlet", "torch", "stable_baselines3")
_SBX = (*_SB3, "jax", "sbx")
PEER_PRELOAD: dict[str, tuple[str, ...]] = {"sb3-ppo": _SB3, "sb3-dqn": _SB3, "sb3-sac": _SB3,
                                            "sbx-ppo": _SBX, "sbx-dqn": _SBX, "sbx-sac": _SBX,
                                            # RLtools: also its C++ module compiled for the task, untimed (bench/peers/rltools.py)
                                            "rltools-sac": ("tinyrl", "bench.peers.rltools:prepare_sac")}


def preload(entry: str, task) -> None:
  """One PEER_PRELOAD entry, as the agent's process runs it in its untimed start-up (bench/referee/agent_host.py) and the plain loop
  does (bench/peers/plain.py): import the module; for `module:function`, call the function with the task."""
  import importlib
  mod, _, fn = entry.partition(":")
  loaded = importlib.import_module(mod)
  if fn: getattr(loaded, fn)(task)
