"""Evaluation: physics parsed from frames (velocity error), pixel metrics, and the report."""

from phyray.eval.physics import (
    PARSERS,
    ParsedStates,
    fill_missing,
    parse_states,
    physics_metrics,
    valid_frames,
    velocity_errors,
)
from phyray.eval.report import (
    evaluate_physics,
    evaluate_videos,
    report_metrics,
    score_rollouts,
    summarize,
    write_report,
)
from phyray.eval.video import pixel_metrics, side_by_side_gif

__all__ = [
    "PARSERS",
    "ParsedStates",
    "evaluate_physics",
    "evaluate_videos",
    "fill_missing",
    "parse_states",
    "physics_metrics",
    "pixel_metrics",
    "report_metrics",
    "score_rollouts",
    "side_by_side_gif",
    "summarize",
    "valid_frames",
    "velocity_errors",
    "write_report",
]
