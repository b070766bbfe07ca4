"""Anomaly maps and image scores."""
from .anomaly_map import AnomalyMaps, anomaly_maps, combine, feature_distance, image_score, maps_from_distances, pixel_distance, smooth
from .patch_match import (kcenter_greedy, memory_bank, memory_coreset, memory_distance, patch_nn_distance,
                          patch_nn_map, topk_mean)

__all__ = ["AnomalyMaps", "anomaly_maps", "combine", "feature_distance", "image_score", "maps_from_distances", "pixel_distance",
           "smooth", "memory_bank", "memory_coreset", "memory_distance", "kcenter_greedy", "patch_nn_distance",
           "patch_nn_map", "topk_mean"]
