"""Feature extractors (offline weights) and DDAD domain adaptation."""
from .extractor import BACKBONES, FeatureExtractor, WeightsNotFoundError, build_extractor

__all__ = ["BACKBONES", "FeatureExtractor", "WeightsNotFoundError", "build_extractor"]
