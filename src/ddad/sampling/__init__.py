"""DDIM maths, DDAD conditioning, start-level policies, the reconstruction loop and GLAD's adaptive one."""
from .adaptive import AdaptiveReconstruction, adaptive_reconstruct, first_switch, saff_fuse, saff_mask, switch_now
from .ddim import ddim_sigma, ddim_step, eps_for_x0, predict_x0
from .gradient import gradient_denoise, matching_timestep
from .guidance import ddad_condition
from .reconstruct import Reconstruction, image_seeds, per_image_noise, reconstruct
from .start import POLICIES, FixedStart, KNNBinStart, StartPolicy, knn_distances, timestep_plan

__all__ = [
    "AdaptiveReconstruction", "adaptive_reconstruct", "first_switch", "saff_fuse", "saff_mask", "switch_now",
    "FixedStart", "KNNBinStart", "POLICIES", "knn_distances", "Reconstruction", "StartPolicy", "ddad_condition", "ddim_sigma", "ddim_step",
    "eps_for_x0", "gradient_denoise", "matching_timestep", "image_seeds", "per_image_noise", "predict_x0", "reconstruct", "timestep_plan",
]
