"""Figures and reports."""
from .figures import anomaly_sheet, colour_bar, heatmap_rgb, labelled_panel, overlay, panel, save_png, to_uint8
from .html import build_report, load_evaluation, per_defect_metrics

__all__ = ["anomaly_sheet", "build_report", "load_evaluation", "per_defect_metrics", "colour_bar", "heatmap_rgb", "labelled_panel", "overlay", "panel",
           "save_png", "to_uint8"]
