"""Rewards for RL post-training: a math answer checker, a sandboxed code runner, a registry.

Pure Python; never imports ray or other project packages."""
from .code_reward import CodeReward
from .limits import RewardLimits
from .math_reward import MathReward
from .registry import BUILTIN_REWARDS, get_reward, score_batch
from .result import RewardResult
from .sandbox import Limits, Sandbox, SandboxUnavailable

__all__ = ["BUILTIN_REWARDS", "CodeReward", "Limits", "MathReward", "RewardLimits", "RewardResult", "Sandbox",
           "SandboxUnavailable", "get_reward", "score_batch"]
