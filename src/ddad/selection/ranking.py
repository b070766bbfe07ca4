"""Candidates, their scores on the proxy set and the ranking (steps 1, 4, 5 of ddad.selection)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import DDADConfig, apply_overrides
from ..metrics import MapAccumulator, Metrics, format_table
from ..methods import RECIPES
from .proxy import PROXY_FOREGROUND, ProxySet

__all__ = ["CHANCE_MARGIN", "Selection", "auto_candidates", "candidate_groups", "candidates_from_grid", "objective",
           "recombined_metrics", "split_candidate", "top_candidate"]

CHANCE_MARGIN = 0.1  # a best objective below 0.5 + this: no candidate finds the synthetic defects (warned)


def auto_candidates(method: str) -> list[str]:
    """The candidates `--auto` tries for a method: the product of its recipe's grid (ddad.methods.RECIPES)."""
    recipe = RECIPES.get(method)
    if recipe is None or not recipe.grid:
        raise ValueError(f"method {method!r} has no label-free recipe (ddad.methods.RECIPES); choose its settings "
                         "with `ddad select --grid KEY V1 V2 ...`")
    return candidates_from_grid([[k, *map(str, v)] for k, v in recipe.grid.items()])


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


def recombined_metrics(det, cfg: DDADConfig, cal_maps: dict[str, torch.Tensor], maps: dict[str, torch.Tensor],
                       proxy: ProxySet) -> tuple[Metrics, tuple[float, ...], tuple[float, ...]]:
    """The metrics of candidate `cfg` on the proxy from terms its detector computed for another candidate of the same
    Detector.terms_signature: constants fitted on the calibration images' terms (as det.calibrate does), the proxy's
    terms combined, smoothed and scored (as det.predict does); where the proxy holds several draws of defects, the
    objective on each draw alone, and where it holds several sources, on each source alone (all draws; else ()).
    det is left as it was (its config is the candidate's only while the terms are combined)."""
    own, det.cfg = det.cfg, cfg
    try:
        combined, scores = det.score_terms(maps, det.fit_constants(cal_maps))
    finally:
        det.cfg = own
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
    """What the proxy ranks candidates on: image AUROC. Its negatives are real nominal images, so it measures how far
    a map's score on a defect on the part rises above the map's own noise on real nominal variation, which is what
    differs between settings on a real category. The pixel metrics are shown, not ranked on: their positives are the
    pasted shapes alone (sharp edges, uniform fills), which maps that trace edges (a large pixel weight) localise best
    whatever the category."""
    return float("nan") if m.image_auroc is None else float(m.image_auroc)


def top_candidate(candidates: list[str], objective_of) -> str:
    """The candidate with the highest objective (NaN lowest; on a tie the model as saved, "", wins)."""
    return max(candidates, key=lambda c: (np.nan_to_num(objective_of(c), nan=-1.0), c == ""))


@dataclass(frozen=True)
class Selection:
    rows: dict[str, Metrics]  # candidate -> proxy metrics (with "objective" in extra)
    best: str  # the candidate with the highest objective ("" = the model as saved)
    n_calibration: int
    n_proxy: int  # nominal images in the proxy set (and one defective copy of each per source and draw)
    shared: bool  # calibration and proxy used the same held-out images
    sources: tuple[str, ...] = ()  # what the synthetic defects were filled from (AnomalySpec.source)
    strength: float = 1.0  # the proxy defects' contrast (AnomalySpec.strength) the candidates were scored at
    probes: dict[float, float] = field(default_factory=dict)  # strength -> the first candidate's proxy image AUROC
    draw_objectives: dict[str, tuple[float, ...]] = field(default_factory=dict)  # candidate -> objective per draw
    source_objectives: dict[str, tuple[float, ...]] = field(default_factory=dict)  # candidate -> objective per source
    shape: str = "perlin"  # the synthetic defects' shape (AnomalySpec.shape)
    foreground: str = PROXY_FOREGROUND  # where they were pasted (AnomalySpec.foreground)

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
            won[top_candidate(list(self.rows), lambda c: self.draw_objectives[c][j])] += 1
        return won

    @property
    def uncertain(self) -> bool:
        """Other draws of the same kind of synthetic defects would mostly choose something else: the best (on all
        draws pooled) is the best on fewer than half of the draws alone, so the proxy cannot tell the leading
        candidates apart on this category."""
        return self.draws > 1 and self.wins[self.best] < self.draws / 2

    @property
    def near_chance(self) -> bool:
        """The best candidate barely tells synthetic defects from nominal images: none of the settings suits this
        category (or the proxy's defects do not resemble anything the model can see), so the choice means little."""
        return not self.top_objective >= 0.5 + CHANCE_MARGIN

    @property
    def top_objective(self) -> float:
        """The highest proxy objective of any candidate (the choice's)."""
        return self.rows[self.best].extra["objective"]

    @property
    def saturated(self) -> bool:
        """Every candidate separates the proxy's defective images perfectly (image AUROC 1): the ranking rests on the
        pixel metrics alone, which favour maps that trace the pasted defects' sharp edges (a large pixel weight).
        select_settings tries fainter defects first (STRENGTHS), so this holds only when even the faintest are all
        found."""
        return len(self.rows) > 1 and all(m.image_auroc == 1.0 for m in self.rows.values())

    def warning(self) -> str:
        """What the user should know about this choice ("" = nothing; several findings one per line)."""
        out = []
        if self.near_chance:
            out.append(f"the best proxy objective is {self.top_objective:.3f}, within "
                       f"{CHANCE_MARGIN} of chance (0.5): no candidate finds the synthetic defects in these images, so "
                       "expect weak detection. Try more training steps, another feature layer/input size (--grid "
                       "features.layers ...), or a proxy closer to the real defects (--proxy-source FOLDER of "
                       "defect-like textures)")
        if self.uncertain:
            won = sorted(((c or "(as saved)", w) for c, w in self.wins.items() if w), key=lambda cw: -cw[1])
            out.append(f"the choice is uncertain: it has the best objective on only {self.wins[self.best]} of the "
                       f"{self.draws} draws of synthetic defects taken alone (draws won: "
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
        named = {(c or "(as saved)") + (" <- best" if c == self.best else ""): m.with_extra(
            **({"draws won": wins[c]} if wins else {}), **dict(zip(per_source, self.source_objectives.get(c, ()))))
            for c, m in self.rows.items()}
        return format_table(named, ("objective", *per_source, *(("draws won",) if wins else ())))
