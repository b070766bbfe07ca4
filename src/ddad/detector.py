"""The public object: fit / adapt / calibrate / predict / evaluate / save / load, for every method.

    det = Detector.create(cfg)              # the method cfg.method names (ddad.methods.METHODS)
    det.fit(train_images, run_dir)          # nominal images in [0, 1]: a tensor (N, 3, H, W) or a data.ImageSet
    det.adapt(train_images)                 # domain adaptation of the feature extractor (Eq. 10)
    det.calibrate(val_images)               # map constants and decision threshold from nominal images
    pred = det.predict(images)              # scores, maps, reconstructions; per image, batch-independent
    det.save(run_dir); Detector.load(run_dir)   # the model directory records its method
"""
from .methods import METHODS
from .methods.base import Calibration, Detector, Prediction, Terms

__all__ = ["Calibration", "Detector", "METHODS", "Prediction", "Terms"]
