"""Reference agents, one file each. An agent is a class `Agent(task, seed)` with `train()` (a generator
yielding cumulative env steps after each update) and `act(obs_batch) -> actions`; see bench/agent_api.py."""

# name -> "module:Class"; these names are accepted by `--agent`
REFERENCE_AGENTS: dict[str, str] = {
  "ppo": "agents.ppo:PPO",
  "dqn": "agents.dqn:DQN",
  "sac": "agents.sac:SAC",
}
# peers (other libraries, optional extra `peers`): "what a user would pick instead"
PEER_AGENTS: dict[str, str] = {
  "sb3-ppo": "bench.peers.sb3:SB3PPO",
  "sb3-dqn": "bench.peers.sb3:SB3DQN",
  "sb3-sac": "bench.peers.sb3:SB3SAC",
}
# libraries the peers import, loaded before the clock starts like tinygrad for the reference agents
PEER_PRELOAD: tuple[str, ...] = ("torch", "stable_baselines3")
