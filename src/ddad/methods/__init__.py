"""Methods as plug-ins: one module per method, one entry in METHODS.

A method subclasses `ddad.methods.base.Detector` (its networks, training objective, reconstruction and distance
terms); its own options live in the config section named after it (`ddad.config.METHOD_NAMES`). The pipeline, CLI,
service, report and benchmark only use the shared Detector interface. Its label-free recipe (`--auto`: the settings
tried and the synthetic defects they are ranked on) is one entry in RECIPES (methods/recipes.py).
"""
from .base import Calibration, Detector, Prediction, Terms
from .d3ad import D3AD
from .ddad import DDAD
from .glad import GLAD
from .ran import RAN
from .recipes import RECIPES, Recipe

METHODS: dict[str, type[Detector]] = {"ddad": DDAD, "d3ad": D3AD, "glad": GLAD, "ran": RAN}

__all__ = ["METHODS", "RECIPES", "Recipe", "Calibration", "Detector", "Prediction", "Terms", "DDAD", "D3AD", "GLAD",
           "RAN"]
