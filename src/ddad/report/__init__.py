"""Figures and reports."""
from .figures import anomaly_sheet, colour_bar, heatmap_rgb, labelled_panel, overlay, panel, save_png, to_uint8
from .html import build_report

__all__ = ["anomaly_sheet", "build_report", "colour_bar", "heatmap_rgb", "labelled_panel", "overlay", "panel",
           "save_png", "to_uint8"]
