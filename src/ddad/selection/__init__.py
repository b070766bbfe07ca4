"""Label-free choice of a trained model's inference settings on a proxy validation set (`ddad select`).

A new category has no labelled defects to tune on, and a setting chosen on test labels (the papers' per-class T', w,
tau) says nothing about the next category. What every run has is its held-out nominal images (data.val_fraction).
The procedure (docs/selection.md gives it as numbered steps, with where each rule comes from):

1. Candidates: lists of overrides of what a trained model can change (features, adapt, sampling, scoring, the
   method's inference options); with `--auto` the product of the method's grid (ddad.methods.RECIPES). The model as
   saved is first.
2. Proxy: the held-out images split into a calibration half and a proxy half (held_out_split); every proxy image as
   it is (label 0) and, per draw and defect source, once with a synthetic defect pasted where the image shows the
   part (label 1, its mask; ddad.data.anomalies, AnomalySpec.foreground "object": the pixels unlike the image's
   border, the whole image on a texture). PROXY_DRAWS draws, seeded per image.
3. Fainter defects where the model as saved finds them all (image AUROC >= SATURATED): pasted again at the next of
   STRENGTHS until they are not all found, so that image detection still ranks the candidates.
4. Scoring: candidates whose terms are the same (Detector.terms_signature, terms_cover) share one calibrated copy
   and one pass over the proxy; each is recombined from those terms (recombined_metrics, equal to a copy of its own).
   The objective is the proxy image AUROC over all draws (`objective`); the highest wins (the model as saved on a
   tie). Pixel AUROC and PRO are shown, not ranked on: they measure how a map traces the pasted shapes.
5. Findings, reported and never acted on: the best near chance (near_chance), the best winning fewer than half of
   the draws taken alone (uncertain), every candidate acing even the faintest defects (saturated).

Synthetic defects are not real ones: the proxy ranks settings, its numbers do not predict the test metrics.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import load_json
from ..config import apply_overrides
from ..detector import Detector
from ..methods import RECIPES
from ..metrics import Metrics, format_table
from ..pipeline import reuse_trained, trial_copy
from .proxy import (MAX_HALF, MIN_SPLIT, PROXY_DRAWS, PROXY_FOREGROUND, SATURATED, STRENGTHS, ProxySet, held_out_split,
                    proxy_set, proxy_sources, proxy_spec)
from .ranking import (CHANCE_MARGIN, Selection, auto_candidates, candidate_groups, candidates_from_grid, objective,
                      recombined_metrics, split_candidate, top_candidate)

__all__ = ["select_settings", "apply_selection", "auto_select", "model_method", "Selection", "ProxySet", "proxy_set", "proxy_spec",
           "proxy_sources", "held_out_split", "auto_candidates", "candidate_groups", "candidates_from_grid",
           "split_candidate", "recombined_metrics", "objective", "top_candidate", "CHANCE_MARGIN", "MIN_SPLIT",
           "MAX_HALF", "PROXY_DRAWS", "PROXY_FOREGROUND", "STRENGTHS", "SATURATED"]

log = logging.getLogger(__name__)


def select_settings(model_dir: str | Path, candidates: list[str], data_root: str | None = None, seed: int = 0,
                    device: str = "cpu", progress: bool = True, proxy_source: str | None = None,
                    strengths: tuple[float, ...] = STRENGTHS, draws: int | None = None,
                    proxy_shape: str | None = None, proxy_foreground: str | None = None) -> Selection:
    """Score every candidate on the proxy set of the model's held-out nominal images (steps 2-5 of the module doc).
    draws: independent draws of synthetic defects (None: PROXY_DRAWS); the candidates are ranked on all draws
    pooled, and each draw alone says how stable that ranking is (Selection.wins).
    strengths: the proxy defects' contrasts, tried in turn while the first candidate finds them all (one value: no
    adaptation).
    proxy_source: where the synthetic defects' content comes from (AnomalySpec.source: grid, patch, texture or a
    folder), several comma-separated for one defective copy each (a recipe's proxy_sources); None = the config's.
    proxy_shape: the defects' shape (AnomalySpec.shape: perlin or cutpaste); None = the config's.
    proxy_foreground: where they are pasted (AnomalySpec.foreground: object or none); None = PROXY_FOREGROUND."""
    model_dir = Path(model_dir)
    base = Detector.load(model_dir, device)
    cfg0 = base.cfg if not data_root else replace(base.cfg, data=replace(base.cfg.data, root=str(data_root)))
    cal, nominal, shared = held_out_split(cfg0)
    if shared:
        log.warning("only %d held-out nominal images: calibration and proxy share them (raise data.val_fraction "
                    "for a cleaner split)", cal.shape[0])
    spec = replace(proxy_spec(cfg0), foreground=proxy_foreground or PROXY_FOREGROUND,
                   **({"shape": proxy_shape} if proxy_shape else {}))
    sources = proxy_sources(proxy_source) if proxy_source else (spec.source,)
    draws = PROXY_DRAWS if draws is None else draws
    if draws < 1:  # before any copy is calibrated (proxy_set says it too)
        raise ValueError(f"proxy draws must be 1 or more (defective copies of each image per source), got {draws}")
    if not strengths or any(not 0 < st <= 1 for st in strengths):
        raise ValueError(f"proxy strengths must be one or more values in (0, 1] (1 = full contrast), got {strengths}")

    cfgs, groups = candidate_groups(type(base), cfg0, candidates)
    rows: dict[str, Metrics] = {}
    per_draw: dict[str, tuple[float, ...]] = {}
    per_source: dict[str, tuple[float, ...]] = {}
    probes: dict[float, float] = {}
    proxy = None

    # the bar counts images through the method's terms: each group's calibration and proxy (the total rises where
    # fainter defects are probed)
    n_proxy_images = nominal.shape[0] * (1 + draws * len(sources))
    bar = tqdm(total=len(groups) * (cal.shape[0] + n_proxy_images), desc="select", unit="img", disable=not progress,
               dynamic_ncols=True)
    for members in groups.values():  # one detector and its terms per group, every member recombined from them
        with trial_copy(model_dir, cfgs[members[0]], device, calibration=cal) as det:
            bar.update(cal.shape[0])  # the copy's calibration (its terms are kept in calibration_terms)
            cal_maps = det.calibration_terms

            def score(c: str, maps: dict[str, torch.Tensor]) -> Metrics:
                m, per_draw[c], per_source[c] = recombined_metrics(det, cfgs[c], cal_maps, maps, proxy)
                return m.with_extra(objective=objective(m))

            if proxy is None:  # the first candidate probes the proxy: fainter defects while it finds them all
                for strength in strengths:
                    proxy = proxy_set(nominal, replace(spec, strength=strength), seed, sources, draws)
                    terms = det.terms_maps(proxy.images, bar.update)
                    rows[candidates[0]] = score(candidates[0], terms)
                    probes[strength] = rows[candidates[0]].image_auroc
                    if not probes[strength] >= SATURATED:
                        break
                    if strength != strengths[-1]:
                        (bar.write if progress else log.info)(
                            f"proxy image AUROC {probes[strength]:.3f} at defect strength {strength:g}: every defect "
                            "found; trying fainter ones")
                        bar.total += n_proxy_images
                        bar.refresh()
            else:
                terms = det.terms_maps(proxy.images, bar.update)
            for c in members:
                if c not in rows:
                    rows[c] = score(c, terms)
                if progress:
                    bar.write(format_table({c or "(as saved)": rows[c]}, ("objective",)).splitlines()[-1])
    bar.close()
    best = top_candidate(candidates, lambda c: rows[c].extra["objective"])
    return Selection({c: rows[c] for c in candidates}, best, cal.shape[0], nominal.shape[0], shared, sources,
                     list(probes)[-1], probes, {c: per_draw[c] for c in candidates} if draws > 1 else {},
                     {c: per_source[c] for c in candidates} if len(sources) > 1 else {}, spec.shape, spec.foreground)


def apply_selection(model_dir: str | Path, sel: Selection, device: str = "cpu") -> None:
    """Save the best candidate into the model (re-adapted and re-calibrated on all held-out images) and write
    selection.json beside it."""
    model_dir = Path(model_dir)
    if sel.best:
        cfg = apply_overrides(Detector.load(model_dir, device).cfg, split_candidate(sel.best))
        reuse_trained(model_dir, cfg, progress=False, device=device)
    (model_dir / "selection.json").write_text(json.dumps({
        "best": sel.best, "objective": "proxy image AUROC",
        "n_calibration": sel.n_calibration, "n_proxy_nominal": sel.n_proxy, "shared_images": sel.shared,
        "near_chance": sel.near_chance, "saturated": sel.saturated, "proxy_shape": sel.shape,
        "proxy_foreground": sel.foreground, "proxy_sources": list(sel.sources),
        "proxy_strength": sel.strength, "strength_probes": {str(k): v for k, v in sel.probes.items()},
        "proxy_draws": sel.draws, "uncertain": sel.uncertain, "draws_won": sel.wins,
        "draw_objectives": {c: list(v) for c, v in sel.draw_objectives.items()},
        "source_objectives": {c: dict(zip(sel.sources, v)) for c, v in sel.source_objectives.items()},
        "rows": {c: m.as_dict() for c, m in sel.rows.items()}}, indent=2))


def auto_select(model_dir: str | Path, seed: int = 0, device: str = "cpu", extra: list[str] = (),
                proxy_source: str | None = None, data_root: str | None = None, apply: bool = True,
                progress: bool = True, strengths: tuple[float, ...] = STRENGTHS, draws: int | None = None,
                proxy_shape: str | None = None, proxy_foreground: str | None = None) -> Selection:
    """The label-free recipe (`--auto`) of the model's method (ddad.methods.RECIPES): its grid (plus `extra`
    candidates) on its proxy defects (`proxy_shape`, `proxy_source` replace them); the proxy's best saved into the
    model when `apply`."""
    method = model_method(model_dir)
    candidates = auto_candidates(method)
    candidates += [c for c in extra if c not in candidates]
    recipe = RECIPES[method]
    sel = select_settings(model_dir, candidates, data_root, seed, device, progress,
                          proxy_source or recipe.proxy_sources, strengths, draws, proxy_shape or recipe.proxy_shape,
                          proxy_foreground)
    if apply:
        apply_selection(model_dir, sel, device)
    return sel


def model_method(model_dir: str | Path) -> str:
    """The method a trained model was trained with (model.json's config; models from before methods are DDAD)."""
    return load_json(Path(model_dir) / "model.json")["config"].get("method", "ddad")
