"""ddad's methods as anomalib models: train, test, predict with anomalib's Engine, datamodules, metrics and visualiser.

    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from ddad.anomalib import DDAD

    model = DDAD(config="configs/mvtec/bottle-cpu.yaml")
    engine = Engine(default_root_dir="results")
    engine.fit(model=model, datamodule=MVTecAD(root="data/mvtec", category="bottle"))
    engine.test(model=model, datamodule=...)      # anomalib's metrics dict (image/pixel AUROC, F1, PRO)
    engine.predict(model=model, data_path="img/") # pred_score, pred_label, anomaly_map, pred_mask per image

One adapter, `AnomalibDetector`, wraps any ddad method; `DDAD`, `D3AD`, `GLAD` and `RAN` (one class per entry of
ddad.methods.METHODS, made below) only name theirs. How the anomalib hooks map onto ddad:

- pre-processor: `ModelSizePreProcessor`, resizing to the config's data.image_size (x image_height) as ddad reads
  files: images bicubic with antialiasing, kept in [0, 1] (no ImageNet normalisation: each method normalises for its
  own networks), masks nearest-exact (Pillow's NEAREST). An image reaches the networks, and a mask the metrics, with
  the same pixels through either tool.
- training_step collects the nominal images (as anomalib's PatchCore collects embeddings); at the end of the epoch
  `fit` runs the method's own training (ddad.methods: the seeded, resumable step schedule of `ddad train`, its
  progress bar and checkpoints), then domain adaptation (DDAD Eq. 10), then calibration on a seeded `data.val_fraction`
  of the training images (the same split `ddad train` takes: sorted paths, numpy PCG64(data.seed)), and, with
  `auto=True`, the label-free choice of inference settings (ddad.selection). The training images are sorted by path
  first, so the model does not depend on the loader's shuffling: it is the model `ddad train` + `ddad adapt` make.
  Lightning runs one epoch and no optimiser of its own (trainer_arguments).
- validation/test/predict steps: Detector.predict per image (scores do not depend on the batch), as anomalib's
  `pred_score` and `anomaly_map` fields.
- post-processor: `NominalPostProcessor` (anomalib's PostProcessor) thresholds with ddad's calibration, from held-out
  nominal images and no label: `pred_label` = score above the threshold at the configured false-reject rate,
  `pred_mask` = map above the pixel threshold. Scores and maps are mapped into (0, 1) with the threshold at 0.5 by a
  strictly increasing function (no clamp), so anomalib's metrics equal those of the raw scores. Pass
  `post_processor=PostProcessor()` for anomalib's own (min-max normalisation and F1-adaptive thresholds from a
  labelled validation set).
- evaluator: anomalib's default metrics plus PRO (AUPRO, FPR limit 0.3, the benchmark's).

Every trained model is also a ddad model directory (`run_dir`, default `<trainer.default_root_dir>/ddad_model`):
`ddad evaluate / predict / serve / export --model` open it as it is. The Lightning checkpoint holds the same model
(networks, adapted extractor, fitted state, config, calibration); `ddad convert CKPT --out DIR` writes its model
directory, and `DDAD(model_dir=DIR)` opens a ddad-trained model in anomalib (its fit is then skipped).

Export: anomalib's `engine.export` traces the model's forward into one graph; ddad's methods run a loop of network
calls with seeded noise in Python, so ONNX / OpenVINO / torch export raise an error naming `ddad export`, which
exports the networks and runs the same loop with ONNX Runtime or OpenVINO.

Supported anomalib: SUPPORTED (the version pyproject pins for the `benchmark` extra); another 2.x version is used
with a warning, an older one refused.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

try:
    import anomalib
    from anomalib import LearningType
    from anomalib.data import Batch, InferenceBatch
    from anomalib.metrics import AUPRO, AUROC, F1Score
    from anomalib.metrics.evaluator import Evaluator
    from anomalib.models.components.base import AnomalibModule
    from anomalib.post_processing import PostProcessor
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Resize
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError("ddad.anomalib needs anomalib: pip install -e '.[benchmark]' (anomalib 2.7)") from e

from .checkpoint import ModelFileError
from .config import DDADConfig, apply_overrides, from_dict, load_config, migrate, to_dict
from .methods import METHODS
from .methods.base import Calibration, Detector
from .pipeline import held_out_paths, refit_on

__all__ = ["AnomalibDetector", "ModelSizePreProcessor", "NominalPostProcessor", "SUPPORTED", "checkpoint_to_model_dir",
           "offline_patchcore"]

log = logging.getLogger(__name__)

SUPPORTED = ("2.7",)  # anomalib major.minor versions this adapter is tested with
_version = tuple(int(p) for p in anomalib.__version__.split(".")[:2] if p.isdigit())
if _version < (2, 0):
    raise ImportError(f"ddad.anomalib supports anomalib {', '.join(SUPPORTED)} (the 2.x Engine and Batch API); "
                      f"anomalib {anomalib.__version__} is installed: pip install 'anomalib==2.7.0'")
if ".".join(map(str, _version)) not in SUPPORTED:
    warnings.warn(f"ddad.anomalib is tested with anomalib {', '.join(SUPPORTED)}; anomalib {anomalib.__version__} is "
                  "installed and may differ in its hooks", stacklevel=2)

CHECKPOINT_KEY = "ddad"  # the Lightning checkpoint's entry holding the model's config, calibration and state
EXPORT_MESSAGE = ("ddad's {method} runs a loop of network calls with seeded noise in Python, which anomalib's "
                  "{kind} export cannot trace into one graph. Export the networks with `ddad export --model {run_dir} "
                  "--format onnx|openvino` and run them with `ddad predict/serve --backend onnxruntime|openvino` "
                  "(the same loop and scores).")


class NominalPostProcessor(PostProcessor):
    """anomalib's PostProcessor at ddad's calibration (held-out nominal images, no label): the image threshold at the
    configured false-reject rate and its pixel threshold, set by the model (`set_thresholds`) and kept through
    validation. Scores and maps are normalised as anomalib expects (into (0, 1), the threshold at 0.5, so that
    `pred_label` = score above the threshold), by a strictly increasing map with no clamp:
    0.5 + atan((x - threshold) / threshold) / pi. Metrics are therefore those of the raw scores; anomalib's min-max
    normalisation clamps at its validation range, which ties scores and moves them, and raw scores above 1 are not an
    option either (torchmetrics then takes them for logits and squashes them through a sigmoid, tying large ones)."""

    def set_thresholds(self, calibration: Calibration) -> None:
        self._image_threshold.fill_(calibration.threshold)
        self._pixel_threshold.fill_(calibration.pixel_threshold)

    @staticmethod
    def to_unit(x: torch.Tensor | None, threshold: torch.Tensor) -> torch.Tensor | None:
        """(-inf, inf) -> (0, 1), strictly increasing, threshold -> 0.5; x as it is where no threshold is set."""
        if x is None or torch.isnan(threshold).item():
            return x
        scale = threshold.abs().clamp_min(1e-12)
        return 0.5 + torch.atan((x - threshold) / scale) / math.pi

    def normalize_batch(self, batch: Batch) -> None:
        batch.anomaly_map = self.to_unit(batch.anomaly_map, self._pixel_threshold)
        batch.pred_score = self.to_unit(batch.pred_score, self._image_threshold)

    def forward(self, predictions: InferenceBatch) -> InferenceBatch:
        score = self.to_unit(predictions.pred_score, self._image_threshold)
        amap = self.to_unit(predictions.anomaly_map, self._pixel_threshold)
        return InferenceBatch(pred_score=score, anomaly_map=amap,
                              pred_label=self._apply_threshold(score, self.normalized_image_threshold),
                              pred_mask=self._apply_threshold(amap, self.normalized_pixel_threshold))

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        """The thresholds come from nominal images, not from the validation set's labels."""

    def on_validation_epoch_end(self, *args, **kwargs) -> None:
        """See on_validation_batch_end."""


class _Resize:
    """Images and masks to (height, width) as ddad reads them (ddad.data.read_image / read_mask): images bicubic with
    antialiasing, clamped to [0, 1]; masks nearest-exact, which picks the pixel under each output pixel's centre as
    Pillow's NEAREST does. torchvision's Resize takes masks 'nearest' (the top-left pixel of each cell): on bottle at
    256 -> 128 px that moved 6% of the defect pixels and PRO by 0.7 points."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = tuple(shape)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None):
        from torchvision import tv_tensors

        if tuple(image.shape[-2:]) != self.shape:
            out = torch.nn.functional.interpolate(image.float(), size=self.shape, mode="bicubic", antialias=True,
                                                  align_corners=False).clamp(0, 1)
            image = tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out
        if mask is not None and tuple(mask.shape[-2:]) != self.shape:
            m = mask[:, None] if mask.dim() == 3 else mask
            out = torch.nn.functional.interpolate(m.float(), size=self.shape, mode="nearest-exact")
            out = (out[:, 0] if mask.dim() == 3 else out).to(mask.dtype)
            mask = tv_tensors.wrap(out, like=mask) if isinstance(mask, tv_tensors.TVTensor) else out
        return image, mask


class ModelSizePreProcessor(PreProcessor):
    """anomalib's PreProcessor resizing images and masks to the model's size as ddad reads them (_Resize). Its
    transform follows the model's config, so a checkpoint stores none of it (the model rebuilds it)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__(transform=None)
        self.transform = _Resize(shape)

    def checkpoint_config(self) -> dict[str, Any]:
        return {}

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Nothing: the size comes from the model's config."""


class _Networks(nn.Module):
    """The detector's networks and feature extractor as one module (what Lightning moves, saves and loads: its
    state_dict), scoring images in [0, 1] at the model's size."""

    def __init__(self, det: Detector) -> None:
        super().__init__()
        self.det = [det]  # a list: not a submodule of its own, its networks are registered below
        self.networks = nn.ModuleDict(det.networks())
        self.extractor = det.extractor

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        pred = self.det[0].predict(images.clamp(0, 1))  # ddad's reading clamps after the bicubic resize
        return InferenceBatch(pred_score=pred.scores, anomaly_map=pred.maps[:, None])


class AnomalibDetector(AnomalibModule):
    """An anomalib model running the ddad method `method` (a key of ddad.methods.METHODS).

    config: a ddad YAML config file, or a config as a dict (None: the defaults); overrides: `section.key=value`
    strings as `--set` takes them (`method` is this class's). model_dir: open this trained ddad model instead (no
    training). run_dir: where the trained model directory and the training checkpoints go (None:
    `<trainer.default_root_dir>/ddad_model`); resume: continue the training from run_dir's checkpoints. adapt: domain
    adaptation after training (when adapt.epochs > 0). auto: then choose the inference settings without labels
    (ddad.selection, the method's recipe); it reads the nominal images from `data_root` (a folder in the config's
    data.layout; None: the MVTecAD datamodule's root/category, else the config's data.root)."""

    method: ClassVar[str] = ""

    def __init__(self, config: str | dict | None = None, overrides: Sequence[str] = (), model_dir: str | None = None,
                 run_dir: str | None = None, resume: bool = False, adapt: bool = True, auto: bool = False,
                 data_root: str | None = None, progress: bool = True,
                 pre_processor: nn.Module | bool = True, post_processor: nn.Module | bool = True,
                 evaluator: Evaluator | bool = True, visualizer: Any = True) -> None:
        if not self.method:
            raise TypeError("use one of ddad.anomalib's method classes (DDAD, D3AD, GLAD, RAN), or subclass "
                            "AnomalibDetector with `method` set to a key of ddad.methods.METHODS")
        if model_dir is not None:
            det = Detector.load(model_dir)
            if det.cfg.method != self.method:
                raise ValueError(f"{model_dir} holds a {det.cfg.method} model; open it with "
                                 f"ddad.anomalib.{_class_name(det.cfg.method)}")
        else:
            det = Detector.create(_config(config, [*overrides, f"method={self.method}"]))
        self.det = det  # before super().__init__: configure_pre_processor reads the model's size
        super().__init__(pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator,
                         visualizer=visualizer)
        self.model = _Networks(det)
        self.run_dir, self.resume, self.adapt, self.auto = run_dir or model_dir, resume, adapt, auto
        self.data_root, self.progress = data_root, progress
        self.register_buffer("_is_fitted", torch.tensor([model_dir is not None]))
        self._images: list[tuple[str, torch.Tensor]] = []
        self._apply_thresholds()

    # ---- anomalib's interface -----------------------------------------------------------------------
    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """One pass over the training images to collect them; the method's training runs in `fit` with its own
        optimiser and step schedule."""
        return {"max_epochs": 1, "num_sanity_val_steps": 0, "gradient_clip_val": 0, "devices": 1}

    @property
    def learning_type(self) -> LearningType:
        return LearningType.ONE_CLASS

    def configure_pre_processor(self, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize to the model's (height, width) as ddad reads images and masks; no normalisation."""
        return ModelSizePreProcessor(image_size or self.det.cfg.data.shape)

    def configure_post_processor(self) -> PostProcessor:
        return NominalPostProcessor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """anomalib's default test metrics and PRO (integrated to FPR 0.3)."""
        return Evaluator(test_metrics=[
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
            F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False, fpr_limit=0.3),
        ])

    def configure_optimizers(self) -> None:
        """None: the method's own training (in `fit`) has its optimiser."""
        return

    def training_step(self, batch: Batch, *args, **kwargs) -> torch.Tensor:
        """Keep the batch's nominal images (on the CPU) for `fit`."""
        del args, kwargs
        if not bool(self._is_fitted):
            paths = batch.image_path or [f"#{len(self._images) + i:08d}" for i in range(batch.image.shape[0])]
            self._images += [(str(p), x) for p, x in zip(paths, batch.image.detach().cpu().clamp(0, 1))]
        return torch.tensor(0.0, requires_grad=True, device=self.device)

    def on_train_epoch_end(self) -> None:
        self._fit_once()

    def on_validation_start(self) -> None:
        self._fit_once()  # Lightning validates before on_train_epoch_end

    def validation_step(self, batch: Batch, *args, **kwargs):
        del args, kwargs
        return batch.update(**self.model(batch.image)._asdict())

    # ---- training -----------------------------------------------------------------------------------
    def _fit_once(self) -> None:
        if bool(self._is_fitted) or not self._images:
            return
        # the evaluation loop runs its hooks under inference mode; the method's training needs gradients
        with torch.inference_mode(False), torch.enable_grad():
            self.fit()
        self._is_fitted.fill_(True)

    def fit(self) -> None:
        """Train, adapt, calibrate (and with `auto`, choose the settings) on the collected images: what `ddad train`
        then `ddad adapt` (then `ddad select --auto`) do, saved as a ddad model directory in run_dir."""
        det, cfg = self.det, self.det.cfg
        ordered = sorted(dict(self._images).items())  # by path: the loader's order plays no part
        self._images = []
        train_paths, val_paths = held_out_paths([p for p, _ in ordered], cfg)  # the split nominal_split takes
        pixels = dict(ordered)
        train = torch.stack([pixels[p] for p in train_paths])
        val = torch.stack([pixels[p] for p in val_paths])
        run_dir = Path(self.run_dir or Path(self.trainer.default_root_dir) / "ddad_model")
        log.info("ddad %s: training on %d nominal images, calibrating on %d; model directory %s", cfg.method,
                 len(train), len(val), run_dir)
        det.fit(train, run_dir, resume=self.resume, progress=self.progress)
        root = self._data_root()
        if root is not None:  # the model directory then knows its dataset (`ddad evaluate --model` without --data)
            det.cfg = replace(det.cfg, data=replace(det.cfg.data, root=str(root)))
        refit_on(det, train, val, run_dir, adapt=self.adapt and cfg.adapt.epochs > 0, progress=self.progress)
        if self.auto:
            if root is None:
                raise ValueError("auto=True reads the held-out nominal images from disk: give data_root (the "
                                 f"training folder in data.layout {cfg.data.layout!r}, e.g. path/to/mvtec/bottle)")
            from .selection import auto_select

            auto_select(run_dir, cfg.data.seed, str(self.device), progress=self.progress)
        self.run_dir = str(run_dir)
        self._bind(Detector.load(run_dir, str(self.device)) if self.auto else det)

    def _data_root(self) -> Path | None:
        """The folder of the training images in the config's layout: data_root, else the datamodule's category folder
        (anomalib's MVTecAD and its kin), else the config's data.root."""
        if self.data_root:
            return Path(self.data_root)
        found = _datamodule_root(getattr(self.trainer, "datamodule", None))
        return found or (Path(self.det.cfg.data.root) if self.det.cfg.data.root else None)

    def _bind(self, det: Detector) -> None:
        """Use `det` (a new extractor after adaptation, a model reloaded after selection) for every later step."""
        self.det = det
        if isinstance(self.pre_processor, ModelSizePreProcessor):
            self.pre_processor.transform = _Resize(det.cfg.data.shape)
        self.model = _Networks(det.to(self.device))
        self._apply_thresholds()

    def _apply_thresholds(self) -> None:
        if isinstance(self.post_processor, NominalPostProcessor) and self.det.calibration is not None:
            self.post_processor.set_thresholds(self.det.calibration)

    # ---- checkpoints ----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CHECKPOINT_KEY] = _model_entry(self.det)
        checkpoint[CHECKPOINT_KEY]["run_dir"] = self.run_dir
        # load_from_checkpoint constructs the model from these before loading its weights: the resolved config
        # itself, so that neither the YAML file nor the model directory has to exist where it is loaded
        hp = checkpoint.setdefault("hyper_parameters", {})
        hp.update(config=to_dict(self.det.cfg), overrides=[], model_dir=None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the detector the checkpoint was saved from (its config, fitted state, calibration) before
        Lightning loads the weights into it."""
        super().on_load_checkpoint(checkpoint)
        entry = checkpoint.get(CHECKPOINT_KEY)
        if entry is None:
            raise ModelFileError("this Lightning checkpoint holds no ddad model (no 'ddad' entry); was it saved by "
                                 "a ddad.anomalib model?")
        self.run_dir = entry.get("run_dir")
        self._bind(_detector_from_entry(entry).to(self.device))

    # ---- export ---------------------------------------------------------------------------------------
    def _no_export(self, kind: str):
        raise NotImplementedError(EXPORT_MESSAGE.format(method=self.det.cfg.method, kind=kind,
                                                        run_dir=self.run_dir or "RUN_DIR"))

    def to_onnx(self, *args, **kwargs):
        self._no_export("ONNX")

    def to_openvino(self, *args, **kwargs):
        self._no_export("OpenVINO")

    def to_torch(self, *args, **kwargs):
        self._no_export("torch")


def _class_name(method: str) -> str:
    return METHODS[method].__name__


def _datamodule_root(dm) -> Path | None:
    """The category folder of an MVTec-layout datamodule (anomalib's MVTecAD and its kin: root + category)."""
    root, category = getattr(dm, "root", None), getattr(dm, "category", None)
    if root is None or category is None:
        return None
    folder = Path(root) / category
    return folder if (folder / "train").is_dir() else None


def _config(config: str | dict | None, overrides: list[str]) -> DDADConfig:
    if isinstance(config, dict):
        return apply_overrides(from_dict(DDADConfig, migrate(config)), overrides)
    return load_config(config, overrides)


def _model_entry(det: Detector) -> dict[str, Any]:
    """What a checkpoint needs besides the networks' weights to rebuild the detector: its model.json, fitted state and
    calibration, as plain data and tensors (loadable with torch.load(weights_only=True))."""
    return {"meta": det.model_meta(), "state": {k: v.detach().cpu() for k, v in det.state().items()},
            "calibration": None if det.calibration is None else det.calibration.to_json()}


def _detector_from_entry(entry: dict[str, Any]) -> Detector:
    cal = entry.get("calibration")
    det = Detector.from_meta(entry["meta"], entry.get("state") or {},
                             None if cal is None else Calibration.from_json(cal), where="checkpoint")
    det.adapted = bool(entry["meta"].get("adapted"))  # the extractor's weights are in the checkpoint either way
    return det


def checkpoint_to_model_dir(ckpt: str | Path, out: str | Path) -> Path:
    """Write the ddad model directory of a ddad.anomalib Lightning checkpoint (`ddad convert`). The checkpoint is
    read with torch.load(weights_only=True): tensors and plain data only, nothing unpickled."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ModelFileError(f"no checkpoint file at {ckpt}; give the .ckpt that anomalib's Engine wrote")
    from anomalib.utils.serialization import anomalib_safe_globals

    with anomalib_safe_globals():
        data = torch.load(ckpt, map_location="cpu", weights_only=True)
    entry = data.get(CHECKPOINT_KEY)
    if entry is None:
        raise ModelFileError(f"{ckpt} holds no ddad model (no 'ddad' entry): it was not saved by a ddad.anomalib "
                             "model")
    det = _detector_from_entry(entry)
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
    _Networks(det).load_state_dict(weights)
    return det.save(out)


def _method_class(method: str) -> type[AnomalibDetector]:
    name = _class_name(method)
    return type(name, (AnomalibDetector,), {
        "method": method, "__module__": __name__,
        "__doc__": f"{METHODS[method].summary}\n\nddad's {name} as an anomalib model (AnomalibDetector)."})


# one anomalib model per method of the table, named like the method's Detector class (DDAD, D3AD, GLAD, RAN)
globals().update({_class_name(m): _method_class(m) for m in METHODS})
__all__ += [_class_name(m) for m in METHODS if _class_name(m) not in __all__]


def offline_patchcore(input_size: int | tuple[int, int] = 256, layers: Sequence[int] = (2, 3), **kwargs):
    """anomalib's own Patchcore with ddad's offline backbone (EfficientNet-Lite0 from the local wheel, layers 2 and 3
    as ddad's baseline), for a row beside a ddad model in the same Engine: images resized to `input_size` and scaled
    to the [-1, 1] the TF-ported weights expect; the ddad models' metrics (PRO included), and anomalib's own
    post-processor. kwargs go to Patchcore (coreset_sampling_ratio, num_neighbors, post_processor, evaluator)."""
    from anomalib.models import Patchcore
    from torchvision.transforms.v2 import Compose, Normalize

    from .features.extractor import lite0_state_dict

    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    pre = PreProcessor(transform=Compose([Resize(size, antialias=True), Normalize([0.5] * 3, [0.5] * 3)]))
    kwargs.setdefault("evaluator", AnomalibDetector.configure_evaluator())
    model = Patchcore(backbone="tf_efficientnet_lite0", layers=list(layers), pre_trained=False, pre_processor=pre,
                      **kwargs)
    missing, _ = model.model.feature_extractor.feature_extractor.load_state_dict(lite0_state_dict(), strict=False)
    if missing:
        raise ModelFileError(f"PatchCore backbone weights not loaded for {missing[:5]}")
    return model
