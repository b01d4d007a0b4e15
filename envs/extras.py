"""Environments beyond classic control: registration of the ids gymnasium does not know by itself,
the observation wrappers the pixel tasks use, and a clear error when a task's extra is not installed.

- Box2D (LunarLander) and MuJoCo (HalfCheetah, Hopper) are gymnasium's own ids; they need the wheels of
  the extras `box2d` and `mujoco`.
- ALE ids (`ALE/Pong-v5`) are registered by ale-py, which ships its ROMs (extra `atari`).
- MinAtar (extra `atari`): `minatar` has a gymnasium env class but registers nothing on import and sets no
  episode limit; `MinAtar/<Game>-v1` is registered here with the minimal action set and a 10,000-step
  limit so that an evaluation always ends.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import gymnasium as gym
import numpy as np

MINATAR_GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway", "Seaquest": "seaquest",
                 "SpaceInvaders": "space_invaders"}
MINATAR_MAX_STEPS = 10_000


@contextmanager
def needs_extra(env_id: str, extra: str | None):
  """A package missing for `env_id` -- ours to register (ALE, MinAtar) or gymnasium's DependencyNotInstalled
  (Box2D, MuJoCo) -- becomes one ImportError that says which extra to install."""
  try: yield
  except (ImportError, gym.error.DependencyNotInstalled) as e:
    hint = f"pip install 'rlspeedrun[{extra}]'" if extra else "install the package that provides it"
    raise ImportError(f"{env_id} needs a package that is not installed ({getattr(e, 'name', None) or e}): {hint}") from e


def ensure_registered(env_id: str, extra: str | None = None) -> None:
  """Register `env_id` if it comes from a package that registers on demand (see needs_extra for a missing one)."""
  if extra == "mujoco": _mujoco_warnings_to_python()
  if env_id in gym.registry: return
  namespace = env_id.split("/")[0] if "/" in env_id else None
  if namespace == "ALE":
    import ale_py
    gym.register_envs(ale_py)
  elif namespace == "MinAtar":
    import minatar.gym  # noqa: F401  (the env class; imported here so a missing package fails early)
    for title, game in MINATAR_GAMES.items():
      gym.register(id=f"MinAtar/{title}-v1", entry_point="minatar.gym:BaseEnv", max_episode_steps=MINATAR_MAX_STEPS,
                   kwargs=dict(game=game, use_minimal_action_set=True))


def _mujoco_warnings_to_python() -> None:
  """MuJoCo writes its warnings into MUJOCO_LOG.TXT in the working directory (gymnasium's v5 models use the
  deprecated `settotalmass`, one warning per env); send them to Python's warnings instead."""
  try: import mujoco  # noqa: I001
  except ImportError: return
  if mujoco.get_mju_user_warning() is None:
    mujoco.set_mju_user_warning(lambda msg: warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2))


def channels_first(env: gym.Env) -> gym.Env:
  """MinAtar's (10, 10, C) bool grid as a (C, 10, 10) float32 image, the layout conv nets here expect."""
  h, w, c = env.observation_space.shape
  space = gym.spaces.Box(0.0, 1.0, (c, h, w), np.float32)
  return gym.wrappers.TransformObservation(env, lambda o: np.moveaxis(o, -1, 0).astype(np.float32), space)


def atari_preprocessing(env: gym.Env) -> gym.Env:
  """The standard Atari pipeline (Mnih et al. 2015 / Machado et al. 2018) with gymnasium's wrappers:
  30 no-op starts, 4-frame skip with max-pooling, 84x84 grayscale, 4 stacked frames -> (4, 84, 84) uint8.
  The env is made with frameskip=1 (AtariPreprocessing skips) and v5's sticky actions (p = 0.25)."""
  env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True,
                                        terminal_on_life_loss=False, scale_obs=False)
  return gym.wrappers.FrameStackObservation(env, 4)
