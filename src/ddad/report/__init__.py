"""Figures and reports."""
from .figures import heatmap_rgb, overlay, panel, save_png, to_uint8
from .html import build_report

__all__ = ["build_report", "heatmap_rgb", "overlay", "panel", "save_png", "to_uint8"]
