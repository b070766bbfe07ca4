"""ddad: unsupervised visual anomaly detection with conditioned denoising diffusion models."""

__all__ = ["__version__"]
__version__ = "0.1.0"
