"""sbx (Stable-Baselines3 in JAX, `sbx-rl`) as peers (optional extra `peers-sbx`): SB3's API and learn() loop with
JAX networks, so the SB3 adapter runs them unchanged. Hyperparameters: rl-baselines3-zoo's, as for the SB3 peers
(rl_zoo3 trains sbx from the same hyperparams/*.yml, `--algo` with sbx installed). JAX compiles each jitted update
on its first call in every fresh process: on this 2-core CPU that start-up, not learning, is most of an sbx run.
"""
from __future__ import annotations

try:  # imported before the clock starts, like tinygrad for the reference agents
  import jax  # noqa: F401
  import sbx
except ImportError as e:
  raise ImportError(f"the sbx peers need the optional extra: pip install -e '.[peers-sbx]' ({e})") from e

from bench.peers.sb3 import SB3Agent


class SBXAgent(SB3Agent):
  algos = {"ppo": sbx.PPO, "dqn": sbx.DQN, "sac": sbx.SAC}


class SBXPPO(SBXAgent): algo = "ppo"
class SBXDQN(SBXAgent): algo = "dqn"
class SBXSAC(SBXAgent): algo = "sac"
