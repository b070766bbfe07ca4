"""`ddad benchmark`: train (or reuse) and evaluate methods on one dataset category, one table side by side.

Every row uses the same data split, image size and metrics code. Nothing here reads test labels to choose a
setting: the DDAD config comes from a file (where each default comes from is written in it), PatchCore uses
anomalib's defaults (coreset 10%, 9 neighbours) with the same backbone.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .config import DDADConfig, to_dict
from .data import AnomalyDataset, collate, load_dataset
from .detector import Detector
from .evaluation import peak_memory_mb
from .metrics import MapAccumulator, Metrics, format_table
from .pipeline import nominal_split, reuse_trained, run_adapt, run_evaluate, run_train

__all__ = ["run_benchmark", "METHODS", "git_commit"]

log = logging.getLogger(__name__)
COLS = ("s/img", "train s", "peak MiB")


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout
        return sha.strip() + ("+dirty" if dirty.strip() else "") or "unknown"
    except OSError:
        return "unknown"


def _ddad(cfg: DDADConfig, test: AnomalyDataset, out: Path, reuse: bool, steps: tuple[int, ...],
          device: str) -> dict[str, Metrics]:
    model_dir = out / "ddad"
    t0 = time.perf_counter()
    if reuse and (model_dir / "model.json").is_file():
        # the UNet is reused; features/adapt/sampling/scoring come from `cfg` (re-adapted where they changed)
        det, changed = reuse_trained(model_dir, cfg, device=device)
        timing = json.loads((model_dir / "benchmark_train.json").read_text())
        if changed:
            timing = {**timing, "seconds": timing.get("train_seconds", timing["seconds"]) + time.perf_counter() - t0,
                      "redone": list(changed)}
            (model_dir / "benchmark_train.json").write_text(json.dumps(timing))
        train_s = timing["seconds"]
    else:
        run_train(cfg, model_dir, device=device)
        t_train = time.perf_counter() - t0
        det = run_adapt(model_dir, device=device)
        train_s = time.perf_counter() - t0
        (model_dir / "benchmark_train.json").write_text(json.dumps({"seconds": train_s, "train_seconds": t_train}))
    rows = {}
    for n in steps:
        det.cfg = replace(det.cfg, sampling=replace(det.cfg.sampling, steps=n))
        res = run_evaluate(det, test, model_dir / f"eval-ddad{n}", name=f"DDAD-{n}")
        rows[f"DDAD-{n} ({cfg.model.preset}, {cfg.data.image_size}px)"] = res.metrics.with_extra(
            **{"s/img": res.seconds_per_image, "train s": train_s, "peak MiB": res.peak_memory_mb})
    return rows


def _patchcore(cfg: DDADConfig, test: AnomalyDataset, out: Path) -> dict[str, Metrics]:
    from .baselines.patchcore import PatchCoreBaseline

    train, _ = nominal_split(cfg)  # the same nominal images DDAD trains on
    pc = PatchCoreBaseline()
    fit = pc.fit(train)
    acc, seconds = MapAccumulator(), 0.0
    for s in range(0, len(test), 16):
        batch = collate([test[i] for i in range(s, min(s + 16, len(test)))])
        t0 = time.perf_counter()
        scores, maps = pc.predict(batch.images)
        seconds += time.perf_counter() - t0
        masks = None if batch.masks is None else batch.masks[:, 0].numpy()
        acc.add(scores.numpy(), batch.labels.numpy(), maps.numpy(), masks)
    m = acc.compute().with_extra(**{"s/img": seconds / len(test), "train s": fit.fit_seconds,
                                    "peak MiB": peak_memory_mb(torch.device("cpu"))})
    return {f"PatchCore (lite0, coreset 10%, {cfg.data.image_size}px)": m}


METHODS = ("ddad", "patchcore")


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"DDAD on {torch.cuda.get_device_name(torch.device(device))} (PatchCore always on the CPU)"
    return "cpu"


def run_benchmark(cfg: DDADConfig, methods: tuple[str, ...], out: str | Path, reuse: bool = False,
                  ddad_steps: tuple[int, ...] = (10, 5), device: str = "cpu") -> str:
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    commit = git_commit()  # the code that trains, read before anything runs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = cfg.data
    test = load_dataset(d.layout, d.root, "test", d.category, d.image_size, d.seed)
    rows: dict[str, Metrics] = {}
    for method in methods:
        log.info("benchmark: %s", method)
        rows.update(_ddad(cfg, test, out, reuse, ddad_steps, device) if method == "ddad" else _patchcore(cfg, test, out))
    header = (f"dataset {d.layout}:{d.category or Path(d.root).name} ({len(test)} test images, "
              f"{int(np.sum(test.labels))} defective), {d.image_size} px, no centre crop; "
              f"commit {commit}; {platform.machine()}, {os.cpu_count()} CPU threads, "
              f"torch {torch.__version__}, {_device_name(device)}")
    table = format_table(rows, extra_cols=COLS)
    report = f"{header}\n\n{table}\n"
    (out / "benchmark.md").write_text(report)
    (out / "benchmark.json").write_text(json.dumps({"header": header, "config": to_dict(cfg), "rows": {
        k: v.as_dict() for k, v in rows.items()}}, indent=2))
    return report
