"""OmniZip compression core: pure tensor functions that decide which audio/video tokens reach the LLM.

Public API::

    OmniZipConfig, PRESETS, config_for_retention, expected_retention   (config)
    KeepPlan, GroupStats, build_keep_plan, apply_keep_plan              (plan)
    CompressionSetting                                                   (setting: what a user asks for)

See :mod:`omnizip_cli.compression.plan` for the method, the numerics and the deviations from the
reference implementation.
"""

from omnizip_cli.compression.config import PRESETS, OmniZipConfig, config_for_retention, expected_retention
from omnizip_cli.compression.plan import GroupStats, KeepPlan, apply_keep_plan, build_keep_plan
from omnizip_cli.compression.budget import ContextFit, ContextTooLong, PromptCounts, fit_budget, fit_to_context
from omnizip_cli.compression.setting import CompressionSetting

__all__ = [
    "PRESETS",
    "CompressionSetting",
    "ContextFit",
    "ContextTooLong",
    "fit_to_context",
    "fit_budget",
    "PromptCounts",
    "GroupStats",
    "KeepPlan",
    "OmniZipConfig",
    "apply_keep_plan",
    "build_keep_plan",
    "config_for_retention",
    "expected_retention",
]
