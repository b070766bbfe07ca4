"""Label-free choice of a trained model's inference settings on a proxy validation set (`ddad select`).

A new category has no labelled defects to tune on, and a setting chosen on the test labels (as the papers' per-class
T', w, tau and checkpoints were) says nothing about the next category. What every run does have is the held-out
nominal images (data.val_fraction). The proxy set is made from them alone:

    every held-out nominal image twice: as it is (label 0, empty mask), and with a synthetic defect pasted in
    (label 1, its mask): Perlin-shaped regions filled from the image's own shuffled cells or a generated texture
    (ddad.data.anomalies, the generator GLAD's training uses; glad.anomalies sets it), always present, seeded.

Each candidate setting (a list of overrides of the sections a trained model can change: features, adapt, sampling,
scoring and the method's inference options) is applied to a copy of the model, which re-adapts where features/adapt
changed and re-calibrates on the calibration images; the copy then scores the proxy set. Candidates whose terms are
the same (Detector.terms_signature: for DDAD, those differing only in v, sigma or the memory weight m; D3AD's lambda,
RAN's alpha) share one copy: its terms (DDAD: reconstruction, D_f, D_p, D_m) are computed once, and each candidate is
scored by recombining them (its constants fitted on the calibration images' terms, as calibrate does; its maps
combined, smoothed and scored, as predict does), with the same numbers as a copy of its own
(tests/unit/test_selection.py). A candidate whose terms another group's copy computes too joins that group
(Detector.terms_cover: DDAD's map without the memory term is the one with it at weight 0), so DDAD's 18-candidate
grid needs 2 sets of terms instead of 19. The held-out images are split in two where there are at least 2 * MIN_SPLIT of
them (calibration half, proxy half), so the proxy's nominal images are not the ones the calibration saw; with fewer,
both use all of them (said in the result).

One draw of synthetic defects is a small sample (one defective copy per image and source: 24 defective images on a
category with 12 held-out images), and candidates whose objectives differ by less than its noise swap places from one
draw to the next. The proxy therefore holds PROXY_DRAWS independent draws (--proxy-draws): the candidates are ranked
on all of them pooled, and each draw taken alone says how often the best would have been chosen (`wins`); when it
won fewer than half of the draws the choice is uncertain. An uncertain choice gets one larger sample: the proxy
grows to MORE_DRAWS times as many draws (--proxy-max-draws; its first draws kept, only the new ones measured, so the
grown proxy is exactly the larger proxy) and every candidate is ranked again on all of them; a choice still uncertain
then is reported as such.
The rule reads only the proxy, and it costs time only where the first sample could not decide.
Where the defects come from several sources, the objective on each source alone is shown too, and a source whose
defects no candidate finds is named (`blind_sources`): on a stochastic texture the image's own shuffled cells look like
more texture.

The choice and its findings are returned (Selection.warning()); the caller shows them (the CLI after the table, the
benchmark in its log).

`--auto` (the label-free recipe, `ddad train --auto`): the candidates are the method's own `auto_grid` and the
defects are the method's `auto_proxy`: by default filled from both the image's shuffled cells and a generated texture,
one copy each per draw, so the same procedure serves objects and stochastic textures; GLAD, trained to repaint such
defects, is ranked on CutPaste-shaped ones. A best objective near chance is warned about (`near_chance`),
and there the proxy's ranking is not used: no candidate finds its defects, so the order among them is noise. Nor is
it used where one source is blind: the ranking then rests on the other source's defects alone, which need not favour
the map that finds the category's defects. In both cases (`cannot_rank`)
`--auto` chooses the method's fallback (Detector.auto_fallback; DDAD: the nominal-memory-led map) and does not grow
the proxy; `--no-fallback` keeps the proxy's best. The fallback is scored and shown beside the grid but not ranked
with it (`unranked`): it answers only where the grid cannot be ranked, and the proxy's findings (its best, near
chance, blind sources, draws won) are the grid's. Where each rule comes from and what it is worth:
docs/selection.md ("Where the rules come from").

A proxy the model already aces says nothing about image detection: when the first candidate (the model as saved)
scores proxy image AUROC >= SATURATED, the defects are pasted again, fainter (AnomalySpec.strength: the next of
STRENGTHS, 1 -> 0.5 -> 0.25), until they are not all found; every candidate is then scored on that proxy. On a
proxy every candidate aces (bottle's at full contrast) the choice would rest on localising pasted patches alone,
which favours pixel-led maps that trace the pasted edges. A proxy that is not aced at strength 1 is used as it is.

The objective is the mean of the proxy image AUROC, pixel AUROC and PRO. Synthetic defects are not real ones: the
proxy ranks settings, its numbers are not a prediction of the test metrics.
"""
from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import DDADConfig, apply_overrides
from .data import ImageSet
from .data.anomalies import AnomalySpec, synthesize_batch
from .metrics import MapAccumulator, Metrics, format_table

__all__ = ["ProxySet", "proxy_set", "candidate_groups", "proxy_sources", "auto_candidates", "auto_select", "CHANCE_MARGIN", "STRENGTHS", "SATURATED", "candidates_from_grid", "split_candidate", "held_out_split", "Selection", "select_settings", "MIN_SPLIT", "recombined_metrics",
           "PROXY_DRAWS", "MORE_DRAWS"]

log = logging.getLogger(__name__)
MIN_SPLIT = 8  # held-out images per half below which calibration and proxy share the images
MAX_HALF = 16  # held-out images per half at most (calibration, proxy): a proxy of 16 nominal images and
# 16 * draws * sources defective ones costs the same on a category of 200 or of 2000 training images
CHANCE_MARGIN = 0.1  # a best objective below 0.5 + this: no candidate finds the synthetic defects (warned)
STRENGTHS = (1.0, 0.5, 0.25)  # proxy defect contrast, tried in turn while the model as saved finds every defect
PROXY_DRAWS = 3  # draws of synthetic defects by default (--proxy-draws): the ranking pooled, its stability shown
MORE_DRAWS = 3  # an uncertain choice is ranked again on this many times the draws (--proxy-max-draws)
SATURATED = 0.99  # proxy image AUROC at or above which the proxy is too easy to rank image detection


def auto_candidates(method_cls) -> list[str]:
    """The candidates `--auto` tries for a method: the product of its `auto_grid` (Detector.auto_grid)."""
    grid = [[k, *map(str, v)] for k, v in method_cls.auto_grid.items()]
    if not grid:
        raise ValueError(f"method {method_cls.name!r} declares no auto grid (Detector.auto_grid); choose its settings "
                         "with `ddad select --grid KEY V1 V2 ...`")
    return candidates_from_grid(grid)


@dataclass(frozen=True)
class ProxySet:
    images: torch.Tensor  # (N + D, 3, H, W) in [0, 1]: N nominal, then D = draws * sources * N with a synthetic defect
    masks: torch.Tensor  # (N + D, 1, H, W) in {0, 1}
    labels: torch.Tensor  # (N + D,) int64
    draw: torch.Tensor  # (N + D,) int64: -1 for the nominal images, else the defects' draw
    source: torch.Tensor  # (N + D,) int64: -1 for the nominal images, else the index of the defects' source

    def subset(self, j: int) -> torch.Tensor:
        """Bool (N + D,): the nominal images and the defective ones of draw j (what a one-draw proxy would hold)."""
        return (self.draw < 0) | (self.draw == j)

    def of_source(self, k: int) -> torch.Tensor:
        """Bool (N + D,): the nominal images and the defective ones filled from source k (all draws)."""
        return (self.source < 0) | (self.source == k)


def proxy_spec(cfg: DDADConfig) -> AnomalySpec:
    """The synthetic-defect generator of the config (glad.anomalies: GLAD's own settings, the defaults otherwise)."""
    from .methods.glad import anomaly_spec

    return replace(anomaly_spec(cfg), probability=1.0)  # every proxy copy gets a defect


def proxy_sources(source: str) -> tuple[str, ...]:
    """"grid,texture" -> ("grid", "texture"): the synthetic defects' contents, one defective copy of each nominal
    image per source."""
    out = tuple(s.strip() for s in source.split(",") if s.strip())
    if not out:
        raise ValueError(f"proxy source must name grid, texture or a folder (or several, comma-separated); got {source!r}")
    return out


def proxy_set(nominal: torch.Tensor, spec: AnomalySpec, seed: int = 0, sources: tuple[str, ...] | None = None,
              draws: int = 1) -> ProxySet:
    """Each nominal image (N, 3, H, W) in [0, 1] as it is and, for every draw and every defect source (default:
    spec.source), once more with a defect forced into it (sample i of source k in draw j drawn from
    (seed, (j * len(sources) + k) * N + i): the set does not depend on how it is batched, and draw 0 is the one-draw
    proxy). The proxy holds N nominal and draws * len(sources) * N defective images."""
    if draws < 1:
        raise ValueError(f"proxy draws must be 1 or more (defective copies of each image per source), got {draws}")
    n, sources = nominal.shape[0], tuple(sources or (spec.source,))
    images, masks = [nominal], [torch.zeros(n, 1, *nominal.shape[-2:])]
    draw, source = [torch.full((n,), -1, dtype=torch.int64)], [torch.full((n,), -1, dtype=torch.int64)]
    for j in range(draws):
        for k, src in enumerate(sources):
            defective, m, _ = synthesize_batch(nominal, seed, replace(spec, source=src), force=True,
                                               offset=(j * len(sources) + k) * n)
            images.append(defective)
            masks.append((m > 0.5).float())
            draw.append(torch.full((n,), j, dtype=torch.int64))
            source.append(torch.full((n,), k, dtype=torch.int64))
    draw = torch.cat(draw)
    return ProxySet(torch.cat(images), torch.cat(masks), (draw >= 0).long(), draw, torch.cat(source))


def recombined_metrics(det, cfg: DDADConfig, cal_maps: dict[str, torch.Tensor], maps: dict[str, torch.Tensor],
                       proxy: ProxySet) -> tuple[Metrics, tuple[float, ...], tuple[float, ...]]:
    """The metrics of candidate `cfg` on the proxy from terms its detector computed for another candidate of the same
    Detector.terms_signature: constants fitted on the calibration images' terms (as det.calibrate does), the proxy's
    terms combined, smoothed and scored (as det.predict does); where the proxy holds several draws of defects, the
    objective on each draw alone, and where it holds several sources, on each source alone (all draws; else ()).
    Leaves det.cfg set to cfg."""
    det.cfg = cfg
    combined, scores = det._score(maps, det.fit_constants(cal_maps))
    scores, combined = scores.cpu().numpy(), combined[:, 0].float().cpu().numpy()
    labels, masks = proxy.labels.numpy(), proxy.masks[:, 0].numpy().astype(bool)

    def metrics(keep: np.ndarray | slice = slice(None)) -> Metrics:
        acc = MapAccumulator()
        acc.add(scores[keep], labels[keep], combined[keep], masks[keep])
        return acc.compute()

    n_draws, n_sources = int(proxy.draw.max()) + 1, int(proxy.source.max()) + 1
    per_draw = tuple(objective(metrics(proxy.subset(j).numpy())) for j in range(n_draws)) if n_draws > 1 else ()
    per_source = (tuple(objective(metrics(proxy.of_source(k).numpy())) for k in range(n_sources)) if n_sources > 1
                  else ())
    return metrics(), per_draw, per_source


def objective(m: Metrics) -> float:
    """Mean of image AUROC, pixel AUROC and PRO (the ones defined)."""
    vals = [v for v in (m.image_auroc, m.pixel_auroc, m.pro) if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def split_candidate(candidate: str) -> list[str]:
    """A candidate's overrides: split at the commas outside brackets ("a=1,features.layers=[2,3]" -> 2 items)."""
    out, depth, cur = [], 0, ""
    for ch in candidate:
        depth += (ch in "[{(") - (ch in "]})")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [o.strip() for o in out + [cur] if o.strip()]


def candidates_from_grid(grid: list[list[str]], tries: list[str] = ()) -> list[str]:
    """Candidates as comma-joined override lists: the product of grid axes [key, v1, v2, ...] plus explicit tries
    ("k=v,k2=v2"). The empty candidate "" (the model as saved) is always first."""
    out = [""]
    axes = []
    for axis in grid:
        if len(axis) < 2 or "=" in axis[0]:
            raise ValueError(f"--grid takes a key and its values, e.g. --grid glad.t_min 100 200 350; got {axis}")
        axes.append([f"{axis[0]}={v}" for v in axis[1:]])
    if axes:
        out += [",".join(c) for c in itertools.product(*axes)]
    out += [t for t in tries if t and t not in out]
    return out


def top_candidate(candidates: list[str], objective_of) -> str:
    """The candidate with the highest objective (NaN lowest; on a tie the model as saved, "", wins)."""
    return max(candidates, key=lambda c: (np.nan_to_num(objective_of(c), nan=-1.0), c == ""))


@dataclass(frozen=True)
class Selection:
    rows: dict[str, Metrics]  # candidate -> proxy metrics (with "objective" in extra)
    best: str  # the candidate with the highest objective ("" = the model as saved)
    n_calibration: int
    n_proxy: int  # nominal images in the proxy set (and one defective copy of each per source)
    shared: bool  # calibration and proxy used the same held-out images
    sources: tuple[str, ...] = ()  # what the synthetic defects were filled from (AnomalySpec.source)
    strength: float = 1.0  # the proxy defects' contrast (AnomalySpec.strength) the candidates were scored at
    probes: dict[float, float] = field(default_factory=dict)  # strength -> the first candidate's proxy image AUROC
    draw_objectives: dict[str, tuple[float, ...]] = field(default_factory=dict)  # candidate -> objective per draw
    source_objectives: dict[str, tuple[float, ...]] = field(default_factory=dict)  # candidate -> objective per source
    first_draws: int = 0  # the draws of the first ranking (fewer than `draws` when it was uncertain and the proxy grew)
    proxy_best: str | None = None  # the candidate with the highest objective, where `best` is the fallback instead
    # (None: best is the proxy's best)
    unranked: tuple[str, ...] = ()  # candidates scored and shown but left out of the ranking (a fallback not in the grid)
    shape: str = "perlin"  # the synthetic defects' shape (AnomalySpec.shape)

    @property
    def ranked(self) -> list[str]:
        """The candidates the proxy ranks (every row but the unranked ones)."""
        return [c for c in self.rows if c not in self.unranked]

    @property
    def fell_back(self) -> bool:
        """The proxy could not rank the candidates (cannot_rank) and `best` is the method's fallback
        (Detector.auto_fallback), not the candidate with the highest objective."""
        return self.proxy_best is not None

    @property
    def cannot_rank(self) -> bool:
        """The proxy's order is not evidence: no candidate finds its defects (near_chance), or no candidate finds
        one source's defects (blind_sources), so the ranking rests on the other kind alone and favours whatever map
        suits that kind (generated-texture defects favour the pixel term, which need not suit the category)."""
        return self.near_chance or bool(self.blind_sources)

    @property
    def blind_sources(self) -> tuple[str, ...]:
        """The defect sources no candidate finds (objective on them alone below 0.5 + CHANCE_MARGIN for every
        candidate), where another source's defects are found: on this category those defects add noise to the
        ranking, not information (on the grain stand-in the image's own shuffled cells look like more grain)."""
        if not self.source_objectives:
            return ()
        blind = tuple(s for k, s in enumerate(self.sources)
                      if not max(np.nan_to_num(self.source_objectives[c][k], nan=0.0) for c in self.ranked)
                      >= 0.5 + CHANCE_MARGIN)
        return blind if len(blind) < len(self.sources) else ()  # none found at all: near_chance says it

    @property
    def draws(self) -> int:
        """How many independent draws of synthetic defects the proxy held (--proxy-draws)."""
        return max((len(v) for v in self.draw_objectives.values()), default=1)

    @property
    def wins(self) -> dict[str, int]:
        """Candidate -> on how many of the draws it had the highest objective (empty with one draw)."""
        if self.draws < 2:
            return {}
        won = dict.fromkeys(self.rows, 0)
        for j in range(self.draws):
            won[top_candidate(self.ranked, lambda c: self.draw_objectives[c][j])] += 1
        return won

    @property
    def grew(self) -> bool:
        """The ranking on the first draws was uncertain, and the proxy was grown to more draws (select_settings)."""
        return 0 < self.first_draws < self.draws

    @property
    def uncertain(self) -> bool:
        """Other draws of the same kind of synthetic defects would mostly choose something else: the best (on all
        draws pooled) is the best on fewer than half of the draws alone, so the proxy cannot tell the leading
        candidates apart on this category."""
        return self.draws > 1 and not self.fell_back and self.wins[self.best] < self.draws / 2

    @property
    def near_chance(self) -> bool:
        """The best candidate barely tells synthetic defects from nominal images: none of the settings suits this
        category (or the proxy's defects do not resemble anything the model can see), so the choice means little."""
        return not self.top_objective >= 0.5 + CHANCE_MARGIN

    @property
    def proxy_choice(self) -> str:
        """The candidate with the highest proxy objective (`best`, unless the fallback replaced it)."""
        return self.best if self.proxy_best is None else self.proxy_best

    @property
    def top_objective(self) -> float:
        """The highest proxy objective of any candidate (the proxy's choice's)."""
        return self.rows[self.proxy_choice].extra["objective"]

    @property
    def saturated(self) -> bool:
        """Every candidate separates the proxy's defective images perfectly (image AUROC 1): the ranking rests on the
        pixel metrics alone, which favour maps that trace the pasted defects' sharp edges (a large pixel weight).
        select_settings tries fainter defects first (STRENGTHS), so this holds only when even the faintest are all
        found."""
        return len(self.ranked) > 1 and all(self.rows[c].image_auroc == 1.0 for c in self.ranked)

    def warning(self) -> str:
        """What the user should know about this choice ("" = nothing; several findings one per line)."""
        out = []
        if self.near_chance:
            out.append(f"the best proxy objective is {self.top_objective:.3f}, within "
                       f"{CHANCE_MARGIN} of chance (0.5): no candidate finds the synthetic defects in these images, so "
                       "expect weak detection. Try more training steps, another feature layer/input size (--grid "
                       "features.layers ...), or a proxy closer to the real defects (--proxy-source FOLDER of "
                       "defect-like textures)")
        if self.blind_sources:
            out.append(f"no candidate finds the synthetic defects filled from {', '.join(self.blind_sources)} (best "
                       "objective on them alone below "
                       f"{0.5 + CHANCE_MARGIN:g}; the table's columns per source): the ranking rests on the other "
                       "source's defects alone, which need not favour the map that finds this category's defects")
        if self.fell_back:
            out.append(f"the proxy cannot rank the candidates here, so the method's fallback {self.best} was chosen "
                       f"rather than the proxy's best, {self.proxy_best or '(as saved)'} (--no-fallback keeps the "
                       "proxy's best)")
        if self.uncertain:
            won = sorted(((c or "(as saved)", w) for c, w in self.wins.items() if w), key=lambda cw: -cw[1])
            grew = f" (the proxy grown from {self.first_draws} draws, where it was uncertain too)" if self.grew else ""
            out.append(f"the choice is uncertain: it has the best objective on only {self.wins[self.best]} of the "
                       f"{self.draws} draws of synthetic defects taken alone{grew} (draws won: "
                       + ", ".join(f"{c} {w}" for c, w in won) + "): the proxy does not separate these settings on "
                       "this category; check the choice on a few real defects if you have any")
        if self.saturated:
            out.append(f"every candidate scores proxy image AUROC 1.0, even with the synthetic defects at strength "
                       f"{self.strength:g}: they are too easy to rank image detection, and the choice rests on "
                       "localising them alone; compare it with the settings as saved on a few real defects if you have "
                       "any")
        return "\n".join(out)

    def table(self) -> str:
        wins = self.wins
        per_source = tuple(f"on {Path(s).name}" for s in self.sources) if self.source_objectives else ()
        named = {(c or "(as saved)") + (" <- best" if c == self.best else "")
                 + (" <- proxy's best" if self.fell_back and c == self.proxy_best else "")
                 + (" (fallback, not ranked)" if c in self.unranked else ""): m.with_extra(
            **({"draws won": wins[c]} if wins else {}), **dict(zip(per_source, self.source_objectives.get(c, ()))))
            for c, m in self.rows.items()}
        return format_table(named, ("objective", *per_source, *(("draws won",) if wins else ())))


def held_out_split(cfg: DDADConfig) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(calibration images, proxy nominal images, shared) from the config's held-out nominal images: alternate
    images, or all of them for both when there are fewer than 2 * MIN_SPLIT (shared); at most MAX_HALF each, so that
    the selection's cost does not grow with the dataset."""
    from .pipeline import nominal_split

    held = nominal_split(cfg)[1]
    n = len(held)
    if n > 2 * MAX_HALF:  # evenly spread over the (sorted) held-out images
        held = held[torch.linspace(0, n - 1, 2 * MAX_HALF).round().long()]
    held = held.stack() if isinstance(held, ImageSet) else held  # the held-out images are few: used whole
    if held.shape[0] < 2 * MIN_SPLIT:
        return held, held, True
    return held[0::2], held[1::2], False


def candidate_groups(method_cls, cfg0: DDADConfig, candidates: list[str]
                     ) -> tuple[dict[str, DDADConfig], dict[str, list[str]]]:
    """(candidate -> its config, terms signature -> its candidates): the candidates grouped by the terms their
    detector computes (Detector.terms_signature), the first candidate's group first; a group whose terms another
    group's detector also computes (Detector.terms_cover: DDAD's map without the memory term, beside one with it)
    joins that group. One detector per group, built for its first member, measures the terms, and each member is
    recombined from them (recombined_metrics)."""
    cfgs = {c: apply_overrides(cfg0, split_candidate(c)) if c else cfg0 for c in candidates}
    by_sig: dict[str, list[str]] = {}
    for c in candidates:
        by_sig.setdefault(method_cls.terms_signature(cfgs[c]), []).append(c)

    def covers(host: str, sig: str) -> bool:
        return host != sig and method_cls.terms_cover(cfgs[by_sig[host][0]], cfgs[by_sig[sig][0]])

    hosts = [h for h in by_sig if not any(covers(o, h) for o in by_sig)]  # groups no other group's terms include
    groups = {h: list(by_sig[h]) for h in hosts}
    for sig, members in by_sig.items():
        if sig not in groups:
            groups.setdefault(next((h for h in hosts if covers(h, sig)), sig), []).extend(members)
    first = next(sig for sig, members in groups.items() if candidates[0] in members)
    return cfgs, {first: groups.pop(first), **groups}


def select_settings(model_dir: str | Path, candidates: list[str], data_root: str | None = None, seed: int = 0,
                    device: str = "cpu", progress: bool = True, proxy_source: str | None = None,
                    strengths: tuple[float, ...] = STRENGTHS, draws: int | None = None,
                    max_draws: int | None = None, fallback: str | None = None,
                    unranked: tuple[str, ...] = (), proxy_shape: str | None = None) -> Selection:
    """Score every candidate on the proxy set of the model's held-out nominal images (see the module doc).
    draws: independent draws of synthetic defects (None: PROXY_DRAWS; one defective copy of each image per source
    and draw); the
    candidates are ranked on all draws pooled, and each draw alone says how stable that ranking is (Selection.wins).
    max_draws: when the choice on `draws` is uncertain, the proxy grows to this many draws (the first ones kept, only
    the new ones measured) and every candidate is ranked again on all of them, once (default MORE_DRAWS * draws;
    = draws: never).
    strengths: the proxy defects' contrasts, tried in turn while the first candidate finds them all (one value: no
    adaptation).
    proxy_source: where the synthetic defects' content comes from (AnomalySpec.source: grid, texture or a folder),
    several comma-separated for one defective copy each (Detector.auto_proxy); None = the config's. On a stochastic
    texture the image's own shuffled cells (grid) look nominal: use texture.
    proxy_shape: the synthetic defects' shape (AnomalySpec.shape: perlin or cutpaste); None = the config's.
    fallback: a candidate (one of `candidates`) chosen instead of the proxy's best when the proxy cannot rank them
    (Selection.cannot_rank: no candidate's objective above chance, or a defect source no candidate finds; such a
    proxy is not grown on its first draws: more draws of defects it cannot see would not rank better); None: the
    proxy's best, always.
    unranked: candidates scored and shown but never the proxy's best, nor counted in its findings (near chance, blind
    sources, draws won); auto_select passes a fallback that is not one of the grid's: it answers only where the grid
    cannot be ranked."""
    from .detector import Detector
    from .pipeline import trial_copy

    model_dir = Path(model_dir)
    base = Detector.load(model_dir, device)
    cfg0 = base.cfg if not data_root else replace(base.cfg, data=replace(base.cfg.data, root=str(data_root)))
    cal, nominal, shared = held_out_split(cfg0)
    if shared:
        log.warning("only %d held-out nominal images: calibration and proxy share them (raise data.val_fraction "
                    "for a cleaner split)", cal.shape[0])
    spec = proxy_spec(cfg0) if proxy_shape is None else replace(proxy_spec(cfg0), shape=proxy_shape)
    sources = proxy_sources(proxy_source) if proxy_source else (spec.source,)
    draws = PROXY_DRAWS if draws is None else draws
    max_draws = MORE_DRAWS * draws if max_draws is None else max_draws
    if draws < 1 or max_draws < draws:  # before any copy is calibrated (proxy_set says it too)
        raise ValueError(f"proxy draws must be 1 or more (defective copies of each image per source), and the most "
                         f"draws at least as many; got {draws} and {max_draws}")
    if not strengths or any(not 0 < st <= 1 for st in strengths):
        raise ValueError(f"proxy strengths must be one or more values in (0, 1] (1 = full contrast), got {strengths}")

    if fallback is not None and fallback not in candidates:
        raise ValueError(f"the fallback {fallback!r} must be one of the candidates (it is scored like them)")
    if not set(candidates) - set(unranked):
        raise ValueError(f"every candidate is unranked ({list(unranked)}): the proxy needs at least one to rank")
    cfgs, groups = candidate_groups(type(base), cfg0, candidates)
    rows: dict[str, Metrics] = {}
    per_draw: dict[str, tuple[float, ...]] = {}
    per_source: dict[str, tuple[float, ...]] = {}
    probes: dict[float, float] = {}
    terms: dict[str, dict[str, torch.Tensor]] = {}  # terms signature -> its terms of the proxy images measured so far
    proxy = None

    def selection() -> Selection:
        best = top_candidate([c for c in candidates if c not in unranked], lambda c: rows[c].extra["objective"])
        n_draws = int(proxy.draw.max()) + 1
        sel = Selection({c: rows[c] for c in candidates}, best, cal.shape[0], nominal.shape[0], shared, sources,
                        list(probes)[-1], probes, {c: per_draw[c] for c in candidates} if n_draws > 1 else {},
                        {c: per_source[c] for c in candidates} if len(sources) > 1 else {}, draws,
                        unranked=tuple(c for c in unranked if c in rows), shape=spec.shape)
        if fallback is not None and fallback != best and sel.cannot_rank:
            sel = replace(sel, best=fallback, proxy_best=best)
        return sel

    # the bar counts images through the method's terms: each group's calibration and proxy, more where fainter
    # defects are probed or the proxy grows (the total rises then)
    n_proxy_images = nominal.shape[0] * (1 + draws * len(sources))
    bar = tqdm(total=len(groups) * (cal.shape[0] + n_proxy_images), desc="select", unit="img", disable=not progress,
               dynamic_ncols=True)
    note = bar.write if progress else log.info  # above the bar, or to the log without one
    for stage in (draws, max_draws) if max_draws > draws else (draws,):
        if proxy is not None:  # the second stage: only when the first choice is uncertain
            first = selection()
            if not first.uncertain:  # certain, or unable to rank with a fallback (which is never uncertain)
                bar.close()
                return first
            note(f"the choice on {draws} draws is uncertain ({first.best or '(as saved)'} won "
                      f"{first.wins[first.best]}): ranking again on {stage} draws")
            proxy, rows = proxy_set(nominal, replace(spec, strength=first.strength), seed, sources, stage), {}
            bar.total += len(groups) * (cal.shape[0] + nominal.shape[0] * (stage - draws) * len(sources))
            bar.refresh()
        for sig, members in groups.items():  # one detector and its terms per group, every member recombined from it
            with trial_copy(model_dir, cfgs[members[0]], device, calibration=cal) as det:
                bar.update(cal.shape[0])  # the copy's calibration (its terms are kept in calibration_terms)
                cal_maps = det.calibration_terms  # measured by the copy's calibration on `cal`

                def score(c: str, maps: dict[str, torch.Tensor]) -> Metrics:
                    m, per_draw[c], per_source[c] = recombined_metrics(det, cfgs[c], cal_maps, maps, proxy)
                    return m.with_extra(objective=objective(m))

                if proxy is None:  # the first candidate probes the proxy: fainter defects while it finds them all
                    for strength in strengths:
                        proxy = proxy_set(nominal, replace(spec, strength=strength), seed, sources, draws)
                        terms[sig] = det.terms_maps(proxy.images, bar.update)
                        rows[candidates[0]] = score(candidates[0], terms[sig])
                        probes[strength] = rows[candidates[0]].image_auroc
                        if not probes[strength] >= SATURATED:
                            break
                        if strength != strengths[-1]:
                            note(f"proxy image AUROC {probes[strength]:.3f} at defect strength {strength:g}: "
                                      "every defect found; trying fainter ones")
                            bar.total += n_proxy_images
                            bar.refresh()
                else:  # the images not measured yet (a grown proxy keeps its first draws, in the same order)
                    have = terms.get(sig, {})
                    new = det.terms_maps(proxy.images[next(iter(have.values())).shape[0] if have else 0:], bar.update)
                    terms[sig] = {k: torch.cat([have[k], v]) if have else v for k, v in new.items()}
                for c in members:
                    if c not in rows:
                        rows[c] = score(c, terms[sig])
                    if progress:
                        bar.write(format_table({c or "(as saved)": rows[c]}, ("objective",)).splitlines()[-1])
    bar.close()
    return selection()


def apply_selection(model_dir: str | Path, sel: Selection, device: str = "cpu") -> None:
    """Save the best candidate into the model (re-adapted and re-calibrated on all held-out images) and write
    selection.json beside it."""
    from .detector import Detector
    from .pipeline import reuse_trained

    model_dir = Path(model_dir)
    if sel.best:
        cfg = apply_overrides(Detector.load(model_dir, device).cfg, split_candidate(sel.best))
        reuse_trained(model_dir, cfg, progress=False, device=device)
    (model_dir / "selection.json").write_text(json.dumps({
        "best": sel.best, "objective": "mean of proxy image AUROC, pixel AUROC, PRO",
        "n_calibration": sel.n_calibration, "n_proxy_nominal": sel.n_proxy, "shared_images": sel.shared,
        "near_chance": sel.near_chance, "saturated": sel.saturated, "proxy_shape": sel.shape,
        "proxy_sources": list(sel.sources),
        "proxy_strength": sel.strength, "strength_probes": {str(k): v for k, v in sel.probes.items()},
        "proxy_draws": sel.draws, "proxy_draws_first": sel.first_draws or sel.draws, "uncertain": sel.uncertain, "draws_won": sel.wins,
        "draw_objectives": {c: list(v) for c, v in sel.draw_objectives.items()},
        "source_objectives": {c: dict(zip(sel.sources, v)) for c, v in sel.source_objectives.items()},
        "blind_sources": list(sel.blind_sources), "fallback": sel.fell_back,
        "proxy_best": sel.proxy_choice, "unranked": list(sel.unranked),
        "rows": {c: m.as_dict() for c, m in sel.rows.items()}}, indent=2))


def auto_select(model_dir: str | Path, method_cls, seed: int = 0, device: str = "cpu", extra: list[str] = (),
                proxy_source: str | None = None, data_root: str | None = None, apply: bool = True,
                progress: bool = True, strengths: tuple[float, ...] = STRENGTHS, draws: int | None = None,
                max_draws: int | None = None, fallback: bool = True, proxy_shape: str | None = None) -> Selection:
    """The label-free recipe (`--auto`): the method's auto grid (plus `extra` candidates, and its fallback) on the
    method's proxy (Detector.auto_proxy: shape and sources; `proxy_shape`, `proxy_source` replace them); where the proxy cannot rank them, the method's fallback
    (Detector.auto_fallback) unless `fallback` is False; the choice saved into the model when `apply`."""
    candidates = auto_candidates(method_cls)
    candidates += [c for c in extra if c not in candidates]
    fallback_candidate = method_cls.auto_fallback if fallback and method_cls.auto_fallback else None
    unranked: tuple[str, ...] = ()
    if fallback_candidate is not None and fallback_candidate not in candidates:  # shown, not ranked with the grid
        candidates.append(fallback_candidate)
        unranked = (fallback_candidate,)
    auto_shape, auto_sources = method_cls.auto_proxy
    sel = select_settings(model_dir, candidates, data_root, seed, device, progress, proxy_source or auto_sources,
                          strengths, draws, max_draws, fallback_candidate, unranked, proxy_shape=proxy_shape or auto_shape)
    if apply:
        apply_selection(model_dir, sel, device)
    return sel
