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
# libraries each peer imports, loaded before the clock starts like tinygrad for the reference agents
_SB3 = ("greenlet", "torch", "stable_baselines3")
_SBX = (*_SB3, "jax", "sbx")
PEER_PRELOAD: dict[str, tuple[str, ...]] = {"sb3-ppo": _SB3, "sb3-dqn": _SB3, "sb3-sac": _SB3,
                                            "sbx-ppo": _SBX, "sbx-dqn": _SBX, "sbx-sac": _SBX,
                                            # RLtools: also its C++ module compiled for the task, untimed (bench/peers/rltools.py)
                                            "rltools-sac": ("tinyrl", "bench.peers.rltools:prepare_sac")}
