"""Anomaly maps and image scores."""
from .anomaly_map import AnomalyMaps, anomaly_maps, combine, feature_distance, image_score, maps_from_distances, pixel_distance, smooth

__all__ = ["AnomalyMaps", "anomaly_maps", "combine", "feature_distance", "image_score", "maps_from_distances", "pixel_distance",
           "smooth"]
