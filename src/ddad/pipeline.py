"""Whole workflows behind the CLI: train, adapt, evaluate, predict. Each writes into a run directory."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from . import distributed
from .config import DDADConfig, apply_overrides, save_config, to_dict
from .data import AnomalyDataset, ImageReadError, ImageSet, load_dataset, read_image, seeded_split
from .data.sample import list_images
from .detector import Detector
from .evaluation import EvalResult
from .metrics import format_table
from .report import labelled_panel, overlay, save_png, to_uint8

__all__ = ["stack_images", "nominal_split", "held_out_paths", "refit_on", "input_files", "run_train", "run_adapt",
           "reuse_trained", "trial_copy", "run_evaluate", "run_predict",
           "PredictRecord"]

log = logging.getLogger(__name__)


def stack_images(ds: AnomalyDataset) -> torch.Tensor:
    """All images of a dataset as one (N, 3, H, W) tensor in [0, 1] (fails early, naming any bad file)."""
    return torch.stack([ds[i].image for i in range(len(ds))])


def aspect_note(path: Path, shape: tuple[int, int]) -> str | None:
    """A warning (logged and returned) where the images' aspect differs from the configured one by more than 5%:
    resizing then stretches them, which thin or round defects do not survive unchanged."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    th, tw = shape
    if abs((w / h) / (tw / th) - 1) <= 0.05:
        return None
    # the multiple-of-8 pair (the CPU presets' downsampling) nearest the configured width that keeps the aspect best
    pairs = [(cw, 8 * max(1, round(cw * h / w / 8))) for cw in range(max(8, tw - 32), tw + 33, 8)]
    cw, ch = min(pairs, key=lambda p: (round(abs((p[0] / p[1]) / (w / h) - 1), 2), abs(p[0] - tw)))
    msg = (f"images are {w}x{h} (aspect {w / h:.2f}) but the model's size is {tw}x{th} (aspect {tw / th:.2f}): "
           f"every image is stretched. To keep the aspect set data.image_size: {cw} and data.image_height: {ch} "
           f"(aspect {cw / ch:.2f}; sides divisible by the UNet's downsampling: 8 for the CPU presets, 16 for the "
           "latent ones)")
    log.warning(msg)
    return msg


def nominal_split(cfg: DDADConfig) -> tuple[ImageSet, ImageSet]:
    """(train, validation) nominal images, read on demand (ddad.data.ImageSet: training, adaptation and calibration
    hold a batch at a time, not the dataset): validation is a seeded `val_fraction` of the training folder."""
    d = cfg.data
    if not d.root:
        raise ValueError("no dataset given: set data.root (e.g. --set data.root=path/to/bottle)")
    ds = load_dataset(d.layout, d.root, "train", d.category, d.shape, d.seed)
    train_paths, val_paths = held_out_paths([it.image for it in ds.items], cfg)
    if train_paths is val_paths:  # too few to hold any out: calibrate on the training images themselves
        images = ImageSet(ds, workers=d.workers)
        return images, images
    keep = set(train_paths)
    tr = AnomalyDataset([it for it in ds.items if it.image in keep], d.shape, ds.mask_threshold, ds.name)
    va = AnomalyDataset([it for it in ds.items if it.image not in keep], d.shape, ds.mask_threshold, ds.name)
    return ImageSet(tr, workers=d.workers), ImageSet(va, workers=d.workers)


def held_out_paths(paths: list, cfg: DDADConfig) -> tuple[list, list]:
    """(training, held-out) image paths: a seeded `data.val_fraction` held out (seeded_split: sorted, numpy
    PCG64(data.seed)); the same list twice (calibrate on the training images themselves) where val_fraction is 0 or
    there are fewer than 4 images."""
    d = cfg.data
    if d.val_fraction <= 0 or len(paths) < 4:
        return paths, paths
    return seeded_split(paths, 1 - d.val_fraction, d.seed)


def run_train(cfg: DDADConfig, out: str | Path, resume: bool = False, progress: bool = True,
              device: str = "cpu") -> Detector:
    """Train, calibrate, save. Under torchrun every process trains its shard of each global batch
    (ddad.distributed); rank 0 alone calibrates and writes the model (the others return uncalibrated)."""
    w = distributed.init(device)
    if w.size > 1 and str(device).startswith("cuda"):
        device = f"cuda:{w.local_rank}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if w.main:
        save_config(cfg, out / "config.yaml")
    train, val = nominal_split(cfg)
    if w.main:  # once, where the size is chosen (not at every later adapt/select/benchmark read of the images)
        aspect_note(train.dataset.items[0].image, cfg.data.shape)
    log.info("training on %d nominal images, calibrating on %d%s", len(train), len(val),
             f" ({w.size} processes, this is rank {w.rank})" if w.size > 1 else "")
    det = Detector.create(cfg, device)
    result = det.fit(train, out, resume=resume, progress=progress)
    log.info("trained %d steps in %.0f s (%.1f img/s)", result.steps, result.seconds, result.images_per_second)
    if w.main:
        det.fit_references(train)
        det.calibrate(val)
        det.save(out)
    return det


def run_adapt(model_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), progress: bool = True,
              device: str = "cpu") -> Detector:
    """Domain adaptation of a saved model (overrides like "adapt.epochs=4"), re-calibrate, save in place.
    It always starts from the backbone's ImageNet weights (Eq. 10's frozen phi_bar), so adapting again replaces
    the previous adaptation instead of compounding it."""
    det = Detector.load(model_dir, device)
    det.cfg = apply_overrides(det.cfg, overrides)
    _refit(det, model_dir, adapt=True, progress=progress)
    return det


def _refit(det: Detector, model_dir: str | Path, adapt: bool, progress: bool,
           calibration: torch.Tensor | None = None) -> None:
    """Re-adapt (from the ImageNet weights) where asked, re-calibrate (on the held-out nominal images, or on
    `calibration`), save: what follows a change of settings."""
    train, val = nominal_split(det.cfg)
    refit_on(det, train, val if calibration is None else calibration, model_dir, adapt, progress)


def refit_on(det: Detector, train, val, model_dir: str | Path, adapt: bool, progress: bool) -> None:
    """Adapt the feature extractor from its ImageNet weights on `train` where asked (else measure the method's
    nominal references for the current settings), calibrate on `val`, save into model_dir. train/val: image tensors
    or ImageSets."""
    if adapt:
        det.reset_extractor()
        r = det.adapt(train, progress=progress)  # measures the references with the adapted extractor
        log.info("domain adaptation: %d epochs, %d steps, loss %.4f -> %.4f", r.epochs, r.steps, r.first_loss,
                 r.last_loss)
    else:
        det.fit_references(train)  # the settings changed (e.g. ddad.memory): references for the new ones
    det.calibrate(val)
    det.save(model_dir)


# What a trained model fixes (changing these needs a new training) and what can be redone on a saved model.
# A method's own section (named after it) counts as trained (it holds its networks' settings), except the
# keys its class lists in `inference_options`.
TRAINED_SECTIONS = ("method", "model", "train", "schedule")
TRAINED_DATA = ("layout", "category", "image_size", "image_height", "val_fraction", "seed")
REDONE_SECTIONS = ("features", "adapt", "sampling", "scoring")


@contextmanager
def trial_copy(model_dir: str | Path, cfg: DDADConfig, device: str = "cpu",
               calibration: torch.Tensor | None = None) -> Iterator[Detector]:
    """`reuse_trained` on a temporary copy of the model (without checkpoints and evaluations): the detector for
    `cfg`, re-adapted/re-calibrated as needed, while the model itself stays untouched (selection, ablations)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "eval*"))
        det, _ = reuse_trained(copy, cfg, progress=False, device=device, calibration=calibration)
        yield det


def reuse_trained(model_dir: str | Path, cfg: DDADConfig, progress: bool = True, device: str = "cpu",
                  calibration: torch.Tensor | None = None) -> tuple[Detector, tuple[str, ...]]:
    """Load a trained model for `cfg` without retraining its UNet. Sections that do not touch the UNet (features,
    adapt, sampling, scoring) are taken from `cfg`; where features or adapt changed, the feature extractor is
    rebuilt from its ImageNet weights and adapted again; where anything changed, the model is re-calibrated and saved
    in place (on `calibration` images where given, then also when nothing changed). Returns (detector, changed
    sections). Raises ValueError where `cfg` asks for a different training."""
    det = Detector.load(model_dir, device)
    old = det.cfg
    own = old.method
    show = lambda v: to_dict(v) if is_dataclass(v) else repr(v)  # noqa: E731
    wrong = [f"{sec} ({show(getattr(old, sec))} != {show(getattr(cfg, sec))})"
             for sec in TRAINED_SECTIONS if getattr(old, sec) != getattr(cfg, sec)]
    # the method's own section: its inference options (Detector.inference_options) may change, the rest not
    inference = type(det).inference_options
    mine, theirs = to_dict(getattr(old, own)), to_dict(getattr(cfg, own))
    wrong += [f"{own}.{k} ({mine[k]!r} != {theirs[k]!r})" for k in mine if k not in inference and mine[k] != theirs[k]]
    wrong += [f"data.{k} ({getattr(old.data, k)!r} != {getattr(cfg.data, k)!r})"
              for k in TRAINED_DATA if getattr(old.data, k) != getattr(cfg.data, k)]
    if wrong:
        raise ValueError(f"the model in {model_dir} was trained with other settings: {'; '.join(wrong)}. "
                         "Drop --reuse to train a new model, or point --out elsewhere.")
    changed = tuple(sec for sec in (*REDONE_SECTIONS, own) if getattr(old, sec) != getattr(cfg, sec))
    if not changed and calibration is None:
        return det, changed
    det.cfg = replace(old, data=cfg.data, **{sec: getattr(cfg, sec) for sec in (*REDONE_SECTIONS, own)})
    _refit(det, model_dir, adapt="features" in changed or "adapt" in changed, progress=progress,
           calibration=calibration)
    return det, changed


def run_evaluate(det: Detector, dataset: AnomalyDataset, out: str | Path | None, name: str = "ddad",
                 progress: bool = True) -> EvalResult:
    """Evaluate and, with `out`, save everything a report needs: metrics.json/.md, scores.json (per image),
    maps.npy (float16), masks.npy (bool), inputs.npy / reconstructions.npy (uint8), calibration.json."""
    res = det.evaluate(dataset, progress=progress, save_dir=out)
    if out is not None:
        out = Path(out)
        (out / "metrics.json").write_text(json.dumps({**res.summary(), "dataset": dataset.name, "name": name}, indent=2))
        (out / "scores.json").write_text(json.dumps([r.__dict__ for r in res.records], indent=1))
        (out / "metrics.md").write_text(metrics_markdown(res, name) + "\n")
        if det.calibration is not None:
            (out / "calibration.json").write_text(json.dumps(
                {"threshold": det.calibration.threshold, "pixel_threshold": det.calibration.pixel_threshold,
                 "nominal_scores": list(det.calibration.nominal_scores)}, indent=1))
    return res


def metrics_markdown(res: EvalResult, name: str) -> str:
    m = res.metrics.with_extra(**{"s/img": res.seconds_per_image, "peak MiB": res.peak_memory_mb})
    return format_table({name: m}, extra_cols=("s/img", "peak MiB"))


@dataclass(frozen=True)
class PredictRecord:
    path: str
    score: float
    normalised_score: float | None  # score / threshold: 1.0 = the decision threshold
    decision: str | None  # PASS / FAIL where the model is calibrated
    panel: str
    mask: str | None  # binary defect mask PNG (255 = defective), where the model is calibrated
    seconds: float  # model time per image in its batch
    info: dict[str, float] = field(default_factory=dict)  # the method's per-image values (GLAD: adaptive step)


def input_files(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():  # recursive: a test/ folder of defect folders is scored whole
            files += [f for d in sorted({p, *(q for q in p.rglob("*") if q.is_dir())}) for f in list_images(d)]
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no image or folder at {p}")
    if not files:
        raise FileNotFoundError(f"no images found in {[str(p) for p in paths]}")
    return files


def _output_names(files: list[Path]) -> list[str]:
    """`<folder>_<stem>` for every file (the folder is the defect type in the dataset layouts), made unique."""
    names, seen = [], set()
    for f in files:
        base = f"{f.parent.name}_{f.stem}" if f.parent.name else f.stem
        name, i = base, 1
        while name in seen:
            i += 1
            name = f"{base}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _write_prediction(f: Path, stem: Path, x: torch.Tensor, pred, i: int, cal, vmax: float | None, size: int,
                      seconds: float) -> PredictRecord:
    score, amap, rec = float(pred.scores[i]), pred.maps[i], pred.reconstructions[i]
    scale = vmax or float(amap.max())
    save_png(to_uint8(rec), f"{stem}_reconstruction.png")
    save_png(overlay(x, amap, scale), f"{stem}_heatmap.png")
    tiles = [to_uint8(x), to_uint8(rec), overlay(x, amap, scale)]
    labels = ["input", "reconstruction", "heatmap"]
    norm, decision, mask_file = None, None, None
    title = f"{f.parent.name}/{f.name}  score {score:.4g}"
    if cal is not None:
        norm = score / cal.threshold
        decision = "FAIL" if score > cal.threshold else "PASS"
        mask = to_uint8((amap > cal.pixel_threshold).float()[None].expand(3, -1, -1))
        mask_file = str(save_png(mask[..., 0], f"{stem}_mask.png"))
        tiles.append(mask)
        labels.append("mask")
        title += f" = {norm:.2f}x threshold  {decision}"
    p = save_png(labelled_panel(tiles, labels, title, scale, scale=max(1, 256 // size)), f"{stem}_panel.png")
    return PredictRecord(str(f), score, norm, decision, str(p), mask_file, seconds,
                         {k: float(v[i]) for k, v in pred.info.items()})


def run_predict(det: Detector, paths: list[str | Path], out: str | Path, progress: bool = False) -> list[PredictRecord]:
    """Score images in batches of sampling.batch_size (each image's score does not depend on its batch mates);
    per image write <folder>_<stem>_{reconstruction,heatmap,mask,panel}.png (the mask only where the model is
    calibrated) and one predictions.json. A file that cannot be read is logged and skipped, not fatal.

    Under torchrun (ddad.distributed) every process scores every N-th file and writes its pictures; the records are
    gathered and rank 0 writes the one predictions.json, in the files' order. Every rank returns all records."""
    from tqdm import tqdm

    w = distributed.world()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = input_files(paths)
    cal = det.calibration
    calibrated = cal is not None and cal.threshold == cal.threshold
    vmax = cal.threshold * 1.5 if calibrated else None
    records: list[tuple[int, PredictRecord]] = []
    named = list(enumerate(zip(files, _output_names(files))))[w.rank :: w.size]  # names from the whole list
    bs = max(1, det.cfg.sampling.batch_size)
    bar = tqdm(total=len(named), desc="predict", unit="img", disable=not (progress and w.main), dynamic_ncols=True)
    for s in range(0, len(named), bs):
        batch, images = [], []
        for order, (f, name) in named[s : s + bs]:
            try:
                images.append(read_image(f, det.cfg.data.shape))
                batch.append((order, f, name))
            except ImageReadError as e:
                log.error("skipped %s: %s", f, e)
        bar.update(len(named[s : s + bs]))
        if not batch:
            continue
        t0 = time.perf_counter()
        x = torch.stack(images)
        pred = det.predict(x)
        seconds = (time.perf_counter() - t0) / len(batch)
        for i, (order, f, name) in enumerate(batch):
            records.append((order, _write_prediction(f, out / name, x[i], pred, i, cal if calibrated else None, vmax,
                                                     det.cfg.data.image_size, seconds)))
    bar.close()
    merged = [r for _, r in sorted(distributed.gather_lists(records), key=lambda p: p[0])]
    if w.main:
        (out / "predictions.json").write_text(json.dumps([r.__dict__ for r in merged], indent=1))
    distributed.barrier()
    return merged
