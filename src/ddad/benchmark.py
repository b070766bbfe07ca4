"""`ddad benchmark`: train (or reuse) and evaluate methods on one dataset category, one table side by side.

Every row uses the same data split, image size and metrics code (the configs' data sections must agree). Nothing
here reads test labels to choose a setting: each method's config comes from a file (where each value comes from
is written in it), PatchCore uses anomalib's defaults (coreset 10%, 9 neighbours) with the same backbone.
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
from .data import AnomalyDataset, load_dataset
from .metrics import Metrics, format_table
from .pipeline import nominal_split, reuse_trained, run_adapt, run_evaluate, run_train

__all__ = ["run_benchmark", "BASELINES", "git_commit", "configs_by_method"]

log = logging.getLogger(__name__)
COLS = ("s/img", "train s", "select s", "peak MiB")  # train s: training + domain adaptation; select s: --auto


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout
        return sha.strip() + ("+dirty" if dirty.strip() else "") or "unknown"
    except OSError:
        return "unknown"


def _diffusion(cfg: DDADConfig, test: AnomalyDataset, out: Path, reuse: bool, steps: tuple[int, ...] | None,
               device: str, auto: bool = False) -> dict[str, Metrics]:
    """Train (or reuse), adapt and evaluate one diffusion method; one row per denoising-step variant. auto: the
    label-free recipe (`ddad select --auto --apply`) chooses the inference settings before the evaluation; the rows
    name its choice and its time (`select s`)."""
    model_dir = out / cfg.method
    t0 = time.perf_counter()
    if reuse and (model_dir / "model.json").is_file():
        # the networks are reused; features/adapt/sampling/scoring come from `cfg` (re-adapted where they changed)
        det, changed = reuse_trained(model_dir, cfg, device=device)
        timing_file = model_dir / "benchmark_train.json"
        timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {"seconds": float("nan")}
        if changed:
            timing = {**timing, "seconds": timing.get("train_seconds", timing["seconds"]) + time.perf_counter() - t0,
                      "redone": list(changed)}
            timing_file.write_text(json.dumps(timing))
        train_s = timing["seconds"]
    else:
        run_train(cfg, model_dir, device=device)
        t_train = time.perf_counter() - t0
        det = run_adapt(model_dir, device=device)
        train_s = time.perf_counter() - t0
        (model_dir / "benchmark_train.json").write_text(json.dumps({"seconds": train_s, "train_seconds": t_train}))
    choice, timing = "", {"train s": train_s}
    if auto:
        t1 = time.perf_counter()
        det, best = _auto(model_dir, cfg.data.seed, device)
        choice = f", auto: {best or 'as configured'}"
        timing["select s"] = time.perf_counter() - t1
    rows = {}
    # a method whose inference has no denoising-step count (RAN scores at fixed timesteps) gets one row
    variants = (steps or (cfg.sampling.steps,)) if type(det).uses_sampling_steps else (None,)
    for n in variants:
        if n is not None:
            det.cfg = replace(det.cfg, sampling=replace(det.cfg.sampling, steps=n))
        label = cfg.method.upper() if n is None else f"{cfg.method.upper()}-{n}"
        res = run_evaluate(det, test, model_dir / f"eval-{cfg.method}{'' if n is None else n}", name=label)
        rows[f"{label} ({cfg.model.preset}, {cfg.data.size_label}{choice})"] = res.metrics.with_extra(
            **{"s/img": res.seconds_per_image, **timing, "peak MiB": res.peak_memory_mb})
    return rows


def _auto(model_dir: Path, seed: int, device: str):
    """The label-free recipe on a trained model: (the detector with the chosen settings, the chosen overrides)."""
    from .detector import Detector
    from .selection import auto_select

    sel = auto_select(model_dir, seed, device)  # a progress bar with an ETA
    log.info("auto selection for %s:\n%s", model_dir.name, sel.table())
    for line in sel.warning().splitlines():
        log.warning("auto selection for %s: %s", model_dir.name, line)
    return Detector.load(model_dir, device), sel.best


def _patchcore(cfg: DDADConfig, test: AnomalyDataset, out: Path) -> dict[str, Metrics]:
    """PatchCore's row, fitted on the nominal images the diffusion methods train on and evaluated by the same loop
    (run_evaluate): OUT/patchcore holds what a report reads (metrics.json, scores.json, maps.npy, masks.npy,
    inputs.npy)."""
    from .baselines.patchcore import PatchCoreBaseline, PatchCoreDetector

    train, _ = nominal_split(cfg)
    pc = PatchCoreBaseline(input_size=cfg.features.input_size)  # the backbone at the size DDAD's features see
    fit = pc.fit(train)
    res = run_evaluate(PatchCoreDetector(cfg, pc), test, out / "patchcore", name="PatchCore")
    m = res.metrics.with_extra(**{"s/img": res.seconds_per_image, "train s": fit.fit_seconds,
                                  "peak MiB": res.peak_memory_mb})
    at = f", backbone at {cfg.features.input_size}px" if cfg.features.input_size else ""
    return {f"PatchCore (lite0, coreset 10%, {cfg.data.size_label}{at})": m}


BASELINES = ("patchcore",)


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"diffusion methods on {torch.cuda.get_device_name(torch.device(device))} (PatchCore always on the CPU)"
    return "cpu"


def configs_by_method(configs: list[DDADConfig], methods: tuple[str, ...]) -> dict[str, DDADConfig]:
    """The config of each diffusion method in `methods` (a config's `method` key says whose it is); all must share
    one data section, so every row sees the same split."""
    from .methods import METHODS

    unknown = [m for m in methods if m not in METHODS and m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join([*METHODS, *BASELINES])}")
    by_method: dict[str, DDADConfig] = {}
    for c in configs:
        if c.method in by_method:
            raise ValueError(f"two configs for method {c.method!r}; pass one --config per method")
        by_method[c.method] = c
    missing = [m for m in methods if m in METHODS and m not in by_method]
    if missing:
        raise ValueError(f"no config for {', '.join(missing)}: pass --config FILE whose `method:` is "
                         f"{missing[0]} (e.g. configs/mvtec/bottle-{missing[0]}-cpu.yaml)")
    datas = {repr(c.data) for c in by_method.values()}
    if len(datas) > 1:
        raise ValueError(f"the configs' data sections differ ({' vs '.join(sorted(datas))}); every row must use "
                         "the same data, image size and split")
    return by_method


def _write(out: Path, header: str, rows: dict[str, Metrics], by_method: dict[str, DDADConfig]) -> str:
    report = f"{header}\n\n{format_table(rows, extra_cols=COLS)}\n"
    (out / "benchmark.md").write_text(report)
    (out / "benchmark.json").write_text(json.dumps({"header": header, "configs": {
        m: to_dict(c) for m, c in by_method.items()}, "rows": {k: v.as_dict() for k, v in rows.items()}}, indent=2))
    return report


def run_benchmark(configs: list[DDADConfig] | DDADConfig, methods: tuple[str, ...], out: str | Path,
                  reuse: bool = False, ddad_steps: tuple[int, ...] | None = None, device: str = "cpu",
                  auto: bool = False) -> str:
    """One table for `methods` (diffusion methods, each with its config, and baselines) on the configs' data; auto:
    every diffusion method's inference settings chosen by its label-free recipe (ddad.selection, `--auto`)."""
    configs = [configs] if isinstance(configs, DDADConfig) else list(configs)
    if not configs:
        raise ValueError("run_benchmark needs at least one config (it names the data)")
    if not methods:
        raise ValueError("no methods to benchmark: pass --methods, e.g. ddad,d3ad,glad,patchcore")
    by_method = configs_by_method(configs, methods)
    cfg0 = next(iter(by_method.values()), configs[0])
    commit = git_commit()  # the code that trains, read before anything runs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = cfg0.data
    test = load_dataset(d.layout, d.root, "test", d.category, d.shape, d.seed)
    header = (f"dataset {d.layout}:{d.category or Path(d.root).name} ({len(test)} test images, "
              f"{int(np.sum(test.labels))} defective), {d.size_label.replace('px', ' px')}, no centre crop; "
              f"commit {commit}; {platform.machine()}, {os.cpu_count()} CPU threads, "
              f"torch {torch.__version__}, {_device_name(device)}")
    rows: dict[str, Metrics] = {}
    for method in methods:
        log.info("benchmark: %s", method)
        if method in BASELINES:
            rows.update(_patchcore(cfg0, test, out))
        else:
            rows.update(_diffusion(by_method[method], test, out, reuse, ddad_steps, device, auto))
        report = _write(out, header, rows, by_method)  # after every method: a partial table survives a crash
    return report
