"""Noise schedules and samplers. Each one registers under a short name in :data:`SCHEDULES`."""

from shared.diffusion.schedule import SCHEDULES, KnowledgeVPSchedule, ScheduleConfig, StepOutput

__all__ = ["SCHEDULES", "KnowledgeVPSchedule", "ScheduleConfig", "StepOutput"]
