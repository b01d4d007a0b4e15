"""Peers: agents of other libraries (optional extra `peers`), "what a user would pick instead"; named like references."""

PEER_AGENTS: dict[str, str] = {
  "sb3-ppo": "bench.peers.sb3:SB3PPO",
  "sb3-dqn": "bench.peers.sb3:SB3DQN",
  "sb3-sac": "bench.peers.sb3:SB3SAC",
}
# libraries the peers import, loaded before the clock starts like tinygrad for the reference agents
PEER_PRELOAD: tuple[str, ...] = ("torch", "stable_baselines3")
