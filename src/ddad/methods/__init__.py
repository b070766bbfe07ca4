"""Methods as plug-ins: one module per method, one entry in METHODS.

A method subclasses `ddad.methods.base.Detector` (its networks, training objective, reconstruction and distance
terms); its own options live in the config section named in `ddad.config.METHOD_SECTIONS`. The pipeline, CLI,
service, report and benchmark only use the shared Detector interface.
"""
from .base import Calibration, Detector, Prediction, Terms
from .d3ad import D3AD
from .ddad import DDAD
from .glad import GLAD
from .ran import RAN

METHODS: dict[str, type[Detector]] = {"ddad": DDAD, "d3ad": D3AD, "glad": GLAD, "ran": RAN}

__all__ = ["METHODS", "Calibration", "Detector", "Prediction", "Terms", "DDAD", "D3AD", "GLAD", "RAN"]
