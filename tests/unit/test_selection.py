"""Label-free selection of inference settings on a proxy set of synthetic defects (ddad.selection)."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ddad.config import DDADConfig
from ddad.metrics import Metrics
from ddad.selection import (
    CHANCE_MARGIN, PROXY_DRAWS, PROXY_FOREGROUND, Selection, auto_candidates, candidate_groups, candidates_from_grid, proxy_set, proxy_sources, proxy_spec,
    select_settings, split_candidate,
)


def test_proxy_set_pairs_every_nominal_image_with_a_masked_defective_copy():
    g = torch.Generator().manual_seed(0)
    nominal = torch.rand(4, 3, 32, 32, generator=g)
    spec = proxy_spec(DDADConfig())
    p = proxy_set(nominal, spec, seed=3)
    assert p.images.shape == (8, 3, 32, 32) and p.masks.shape == (8, 1, 32, 32)
    assert p.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(p.images[:4], nominal) and p.masks[:4].sum() == 0
    for i in range(4):
        m = p.masks[4 + i, 0] > 0
        assert m.any(), "every defective copy has a defect"
        changed = (p.images[4 + i] - nominal[i]).abs().amax(dim=0) > 0
        assert not (changed & ~m).any(), "only the masked pixels change"
    again = proxy_set(nominal, spec, seed=3)
    assert torch.equal(again.images, p.images)
    alone = proxy_set(nominal[:1], spec, seed=3)  # sample i from (seed, i): not from the rest of the set
    assert torch.equal(alone.images[1], p.images[4])
    assert not torch.equal(proxy_set(nominal, spec, seed=4).images, p.images)


def test_several_defect_sources_give_one_defective_copy_each():
    g = torch.Generator().manual_seed(0)
    nominal = torch.rand(3, 3, 32, 32, generator=g)
    spec = proxy_spec(DDADConfig())
    assert proxy_sources(" grid, texture ") == ("grid", "texture")
    with pytest.raises(ValueError, match="grid, texture or a folder"):
        proxy_sources(" , ")
    p = proxy_set(nominal, spec, seed=1, sources=("grid", "texture"))
    assert p.images.shape == (9, 3, 32, 32) and p.labels.tolist() == [0] * 3 + [1] * 6
    assert torch.equal(p.images[:3], nominal) and p.masks[:3].sum() == 0 and (p.masks[3:].flatten(1).sum(1) > 0).all()
    grid_only = proxy_set(nominal, spec, seed=1, sources=("grid",))
    assert torch.equal(grid_only.images, p.images[:6])  # the first source's copies are the single-source set
    assert torch.equal(proxy_set(nominal, spec, seed=1).images, grid_only.images)  # default: spec.source (grid)
    texture_only = proxy_set(nominal, spec, seed=1, sources=("texture",))
    inside = p.masks[6:] > 0
    assert not torch.equal(p.images[6:], texture_only.images[3:])  # the second source draws other samples (offset)
    assert (p.images[6:] - nominal).abs().amax(dim=1, keepdim=True)[~inside].max() == 0  # still only masked pixels


def test_more_draws_add_independent_defective_copies_and_the_first_draw_is_the_one_draw_proxy():
    g = torch.Generator().manual_seed(0)
    nominal = torch.rand(3, 3, 32, 32, generator=g)
    spec = proxy_spec(DDADConfig())
    one = proxy_set(nominal, spec, seed=1, sources=("grid", "texture"))
    three = proxy_set(nominal, spec, seed=1, sources=("grid", "texture"), draws=3)
    assert three.images.shape[0] == 3 + 3 * 2 * 3 and three.labels.tolist() == [0] * 3 + [1] * 18
    assert three.draw.tolist() == [-1] * 3 + [0] * 6 + [1] * 6 + [2] * 6
    assert three.source.tolist() == [-1] * 3 + ([0] * 3 + [1] * 3) * 3  # per draw: each source's copies in turn
    assert int(three.of_source(1).sum()) == 3 + 3 * 3 and torch.equal(three.labels[three.of_source(0)].unique(),
                                                                        torch.tensor([0, 1]))
    assert torch.equal(three.images[:9], one.images) and torch.equal(three.masks[:9], one.masks)
    assert torch.equal(three.images[three.subset(0)], one.images) and int(three.subset(2).sum()) == 9
    for j in (1, 2):  # other defects in the same images, only where their masks say
        other = three.images[three.draw == j]
        assert not torch.equal(other, one.images[3:])
        outside = three.masks[three.draw == j] == 0
        assert (other - nominal.repeat(2, 1, 1, 1)).abs().amax(dim=1, keepdim=True)[outside].max() == 0
    with pytest.raises(ValueError, match="draws must be 1 or more"):
        proxy_set(nominal, spec, draws=0)


def test_a_best_that_wins_fewer_than_half_of_the_draws_alone_is_flagged_as_uncertain():
    def sel(per_draw):  # pooled objective: the mean of the draws (what pooling about gives)
        rows = {c: Metrics(0.9, 0.8, 0.5).with_extra(objective=float(np.mean(v))) for c, v in per_draw.items()}
        best = max(rows, key=lambda c: rows[c].extra["objective"])
        return Selection(rows, best, 4, 4, True, ("grid",), draw_objectives=per_draw)

    close = sel({"": (0.70, 0.60, 0.61), "scoring.v=4": (0.66, 0.65, 0.66)})  # pooled best v=4, wins draws 2, 3
    assert close.best == "scoring.v=4" and close.draws == 3 and close.wins == {"": 1, "scoring.v=4": 2}
    assert not close.uncertain and close.warning() == ""
    swap = sel({"": (0.58, 0.70, 0.58), "scoring.v=4": (0.66, 0.66, 0.64), "scoring.v=16": (0.70, 0.55, 0.67)})
    assert swap.best == "scoring.v=4" and swap.wins == {"": 1, "scoring.v=4": 0, "scoring.v=16": 2}
    assert swap.uncertain and "only 0 of the 3 draws" in swap.warning() and "scoring.v=16 2" in swap.warning()
    assert "draws won" in swap.table() and "draws won" not in sel({"": (0.7,)}).table()
    assert not sel({"": (0.7,), "scoring.v=4": (0.6,)}).uncertain  # one draw: nothing to compare


def test_each_sources_objective_is_in_the_table():
    rows = {c: Metrics(0.8, 0.7, 0.5).with_extra(objective=o) for c, o in (("", 0.55), ("scoring.v=4", 0.58))}

    def sel(per_source, sources=("grid", "texture")):
        return Selection(rows, "scoring.v=4", 4, 4, True, sources, source_objectives=per_source)

    head = sel({"": (0.45, 0.58), "scoring.v=4": (0.59, 0.61)}).table().splitlines()
    assert "on grid" in head[0] and "on texture" in head[0] and "0.61" in head[-1]
    one = Selection(rows, "scoring.v=4", 4, 4, True, ("grid",))
    assert "on grid" not in one.table()
    folder = sel({"": (0.7, 0.7), "scoring.v=4": (0.7, 0.7)}, ("grid", "/data/dtd/banded"))
    assert "on banded" in folder.table()  # a folder source by its name


def test_auto_grid_is_the_methods_own_and_a_method_without_one_is_told_what_to_do(monkeypatch):
    from ddad.config import apply_overrides
    from ddad.methods import METHODS, RECIPES

    c = auto_candidates("ddad")
    assert c[0] == "" and len(c) == 1 + int(np.prod([len(v) for v in RECIPES["ddad"].grid.values()]))
    assert "sampling.start_level=500,scoring.v=16,ddad.memory=0" in c and "ddad.memory=16" in c[-1]
    for name in METHODS:  # every key of every auto grid is an inference setting of a trained model
        for cand in auto_candidates(name)[1:]:
            apply_overrides(DDADConfig(method=name), split_candidate(cand))
    # DDAD's grid needs two reconstructions of the proxy: T' 250 and 500 with the memory on D_f's layers (the m = 0
    # candidates, and the model as saved, recombined from them)
    cfgs, groups = candidate_groups(METHODS["ddad"], DDADConfig(), c)
    assert len(groups) == 2 and "" in next(iter(groups.values()))
    assert all(cfgs[m[0]].ddad.memory > 0 for m in groups.values())
    assert sorted(cfgs[m[0]].sampling.start_level for m in groups.values()) == [250, 500]
    monkeypatch.delitem(RECIPES, "ran")
    with pytest.raises(ValueError, match="ddad select --grid"):
        auto_candidates("ran")


def test_a_best_objective_near_chance_is_flagged():
    def sel(objective):
        return Selection({"": Metrics(None, None, None).with_extra(objective=objective)}, "", 4, 4, True, ("grid",))

    assert sel(0.5 + CHANCE_MARGIN - 0.01).near_chance and "chance" in sel(0.55).warning()
    assert not sel(0.8).near_chance and sel(0.8).warning() == ""
    assert sel(float("nan")).near_chance


def test_the_proxys_best_is_chosen_whatever_its_findings(tiny_model, tmp_path, monkeypatch, capsys):
    import shutil

    import ddad.selection as selection
    from ddad.cli import main
    from ddad.methods import RECIPES, Recipe

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    built, level = [], {"objective": 0.55}
    real_proxy_set = selection.proxy_set

    def recording_proxy_set(nominal, spec, seed=0, sources=None, draws=1):
        built.append((draws, spec.foreground))
        return real_proxy_set(nominal, spec, seed, sources, draws)

    def fake_metrics(det, cfg, cal_maps, maps, proxy):
        # pooled: v=4 best; alone, v=1 wins draw 0 and v=16 the others: the best is uncertain
        v, n = cfg.scoring.v, int(proxy.draw.max()) + 1
        o = level["objective"] + {1.0: 0.0, 4.0: 0.02, 16.0: 0.01}[v]
        per_draw = tuple(o + (0.05 if (v == 1.0) == (j == 0) and v in (1.0, 16.0) else 0.0) for j in range(n))
        return Metrics(o, o, o), per_draw, (o, o)

    monkeypatch.setattr(selection, "proxy_set", recording_proxy_set)
    monkeypatch.setattr(selection, "recombined_metrics", fake_metrics)
    cands = ["", "scoring.v=4", "scoring.v=16"]
    sel = select_settings(model, cands, progress=False, strengths=(1.0,), draws=2)
    # near chance and uncertain: both reported, neither acted on (the proxy is measured once, on its draws)
    assert sel.best == "scoring.v=4" and sel.near_chance and sel.uncertain and built == [(2, PROXY_FOREGROUND)]
    assert "chance" in sel.warning() and "uncertain" in sel.warning()
    built.clear()
    level["objective"] = 0.75
    sel = select_settings(model, cands, progress=False, strengths=(1.0,), draws=2, proxy_foreground="none")
    assert sel.best == "scoring.v=4" and not sel.near_chance and built == [(2, "none")] and sel.foreground == "none"

    monkeypatch.setitem(RECIPES, "ddad", Recipe({"scoring.v": (1, 4, 16)}))
    assert main(["select", "--model", str(model), "--auto", "--proxy-draws", "2", "--apply"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((model / "selection.json").read_text())
    assert saved["best"] == "scoring.v=4" and saved["proxy_foreground"] == PROXY_FOREGROUND and "on the part" in out
    assert set(saved["rows"]) == {"", "scoring.v=1", "scoring.v=4", "scoring.v=16"} and saved["uncertain"]


def test_a_proxy_every_candidate_aces_is_flagged_as_saturated():
    def row(image_auroc):
        return Metrics(image_auroc, None, None).with_extra(objective=0.8)

    both = Selection({"": row(1.0), "scoring.v=4": row(1.0)}, "", 4, 4, True, ("grid",))
    assert both.saturated and not both.near_chance and "too easy" in both.warning()
    assert not Selection({"": row(1.0), "scoring.v=4": row(0.9)}, "", 4, 4, True).saturated
    assert not Selection({"": row(1.0)}, "", 4, 4, True).saturated  # one candidate: nothing was ranked


def test_candidates_are_the_grid_product_plus_tries_after_the_saved_settings():
    c = candidates_from_grid([["glad.t_min", "100", "200"], ["sampling.start_level", "500", "750"]],
                             ["scoring.sigma=2", "glad.t_min=100,sampling.start_level=500"])
    assert c == ["", "glad.t_min=100,sampling.start_level=500", "glad.t_min=100,sampling.start_level=750",
                 "glad.t_min=200,sampling.start_level=500", "glad.t_min=200,sampling.start_level=750",
                 "scoring.sigma=2"]
    with pytest.raises(ValueError, match="key and its values"):
        candidates_from_grid([["glad.t_min=100"]])


def test_a_candidate_splits_at_commas_outside_brackets():
    c = candidates_from_grid([["sampling.w", "0", "3"], ["features.layers", "[2,3]", "[3]"]])
    assert [split_candidate(x) for x in c[1:3]] == [["sampling.w=0", "features.layers=[2,3]"],
                                                    ["sampling.w=0", "features.layers=[3]"]]
    assert split_candidate("") == [] and split_candidate("a=1, b={x: 1, y: 2}") == ["a=1", "b={x: 1, y: 2}"]


def test_select_scores_every_candidate_and_apply_saves_the_best(tiny_model, tmp_path, capsys):
    import shutil

    from ddad.cli import main
    from ddad.detector import Detector

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    sel = select_settings(model, ["", "scoring.sigma=2.0", "sampling.steps=1"], progress=False)
    assert list(sel.rows) == ["", "scoring.sigma=2.0", "sampling.steps=1"]
    assert sel.best in sel.rows and sel.shared  # the tiny category has too few held-out images to split
    for m in sel.rows.values():
        assert m.extra["objective"] == m.image_auroc and sel.draws == PROXY_DRAWS
        assert m.n_images == (1 + sel.draws) * sel.n_proxy and m.n_anomalous == sel.draws * sel.n_proxy
    assert Detector.load(model).cfg == Detector.load(tiny_model).cfg  # trying candidates leaves the model alone
    assert main(["select", "--model", str(model), "--grid", "scoring.sigma", "0.5", "3.0", "--apply",
                 "--proxy-draws", "2"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((model / "selection.json").read_text())
    assert set(saved["rows"]) == {"", "scoring.sigma=0.5", "scoring.sigma=3.0"} and saved["best"] in out
    assert saved["proxy_draws"] == 2 and "draws won" in out
    want = {"": 1.0, "scoring.sigma=0.5": 0.5, "scoring.sigma=3.0": 3.0}[saved["best"]]
    assert Detector.load(model).cfg.scoring.sigma == want
    with pytest.raises(ValueError, match="other settings"):  # a trained section is not an inference setting
        select_settings(model, ["model.preset=cpu-64"], progress=False)


def test_candidates_sharing_their_terms_are_scored_from_one_run_exactly_as_if_each_ran_alone(tiny_model, tmp_path,
                                                                                             monkeypatch):
    import shutil

    import ddad.pipeline as pipeline
    import ddad.selection
    from ddad.detector import Detector

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    # three sets of terms: memory on (its weight, with v) with the memory-off candidates (saved, v, sigma) recombined
    # from them at m = 0, memory on other layers, fewer sampling steps
    cands = ["", "scoring.v=4", "scoring.sigma=2.0", "ddad.memory=1", "ddad.memory=4,scoring.v=4",
             "ddad.memory=4,ddad.memory_layers=[1,2,3]", "sampling.steps=1"]
    opened, real_copy = [], pipeline.trial_copy

    def counting_copy(model_dir, cfg, *a, **k):
        opened.append(cfg)
        return real_copy(model_dir, cfg, *a, **k)

    monkeypatch.setattr(ddad.selection, "trial_copy", counting_copy)  # where select_settings finds it
    with pytest.raises(ValueError, match="draws must be 1 or more"):  # refused before any copy is calibrated
        select_settings(model, cands, progress=False, draws=0)
    assert opened == []
    measured, real_terms = [], Detector.terms_maps

    def counting_terms(self, images, on_batch=None):
        measured.append(images.shape[0])
        return real_terms(self, images, on_batch)

    monkeypatch.setattr(Detector, "terms_maps", counting_terms)
    sel = select_settings(model, cands, progress=False, strengths=(1.0,))
    assert list(sel.rows) == cands and len(opened) == 3 and opened[0].ddad.memory == 1
    n = sel.n_calibration  # per group: the copy's calibration, then the proxy; the calibration's terms are reused
    assert measured == [n, (1 + sel.draws) * sel.n_proxy] * 3
    monkeypatch.setattr(Detector, "terms_maps", real_terms)
    assert len({round(m.pixel_auroc, 6) for m in sel.rows.values()}) > 2  # the candidates' maps do differ
    monkeypatch.setattr(ddad.selection, "trial_copy", real_copy)
    assert_scored_as_if_each_ran_alone(model, cands, sel)


def assert_scored_as_if_each_ran_alone(model, cands, sel):
    """Every candidate's row of `sel` equals the metrics of a copy of the model of its own, re-calibrated on the
    calibration half and predicting the proxy set."""
    from ddad.config import apply_overrides
    from ddad.detector import Detector
    from ddad.metrics import MapAccumulator
    from ddad.pipeline import trial_copy
    from ddad.selection import held_out_split

    cfg0 = Detector.load(model).cfg
    cal, nominal, _ = held_out_split(cfg0)
    proxy = proxy_set(nominal, replace(proxy_spec(cfg0), strength=sel.strength, foreground=sel.foreground), 0,
                      draws=sel.draws)
    for c in cands:  # the reference: a copy of the model per candidate, re-calibrated, predicting the proxy
        with trial_copy(model, apply_overrides(cfg0, split_candidate(c)), calibration=cal) as det:
            pred = det.predict(proxy.images)
        acc = MapAccumulator()
        acc.add(pred.scores.numpy(), proxy.labels.numpy(), pred.maps.float().numpy(), proxy.masks[:, 0].numpy() > 0)
        want = acc.compute()
        got = sel.rows[c]
        for k in ("image_auroc", "pixel_auroc", "pro", "image_ap", "pixel_ap"):
            assert getattr(got, k) == pytest.approx(getattr(want, k), abs=1e-6), (c, k)


@pytest.mark.parametrize("method", ["d3ad", "ran"])
def test_a_methods_term_weights_are_recombined_from_one_set_of_terms_exactly_as_if_each_ran_alone(
        method, tiny_object, tmp_path, monkeypatch):
    """D3AD's lambda and RAN's alpha (Detector.combine_options) weigh terms computed once; a changed start level or
    noise scale is a set of terms of its own."""
    import ddad.pipeline as pipeline
    import ddad.selection
    from ddad.config import apply_overrides
    from ddad.data import load_dataset
    from ddad.pipeline import stack_images
    from test_d3ad import TINY_D3AD
    from test_ran import TINY_RAN

    from conftest import fitted_detector

    tiny = {"d3ad": TINY_D3AD, "ran": TINY_RAN}[method]
    cfg = apply_overrides(DDADConfig(), [*tiny, f"data.root={tiny_object}"])
    det = fitted_detector(cfg, stack_images(load_dataset("mvtec", tiny_object, "train", image_size=32)), tmp_path)
    det.save(tmp_path / "m")
    weight, other = {"d3ad": ("d3ad.latent_weight", "sampling.start_level=160"),
                     "ran": ("ran.alpha", "ran.timesteps=[25,100,200]")}[method]
    cands = ["", f"{weight}=0.15", f"{weight}=0.5", other, f"{other},{weight}=0.15"]
    opened, real_copy = [], pipeline.trial_copy

    def counting_copy(model_dir, cfg, *a, **k):
        opened.append(cfg)
        return real_copy(model_dir, cfg, *a, **k)

    monkeypatch.setattr(ddad.selection, "trial_copy", counting_copy)  # where select_settings finds it
    sel = select_settings(tmp_path / "m", cands, progress=False, strengths=(1.0,))
    assert len(opened) == 2  # one set of terms per start level / noise scale
    monkeypatch.setattr(ddad.selection, "trial_copy", real_copy)
    assert len({round(m.pixel_auroc, 6) for m in sel.rows.values()}) > 2  # the weights do change the maps
    assert_scored_as_if_each_ran_alone(tmp_path / "m", cands, sel)


def test_every_auto_grid_is_made_of_settings_a_trained_model_takes():
    """A key of an auto grid is a shared inference section or one of the method's inference options, and a weight
    recombined from shared terms is one of those options."""
    from ddad.methods import METHODS, RECIPES
    from ddad.pipeline import REDONE_SECTIONS

    assert set(RECIPES) == set(METHODS), "every method has a label-free recipe"
    for name, cls in METHODS.items():
        assert set(cls.combine_options) <= set(cls.inference_options)
        for key in RECIPES[name].grid:
            section, option = key.split(".", 1)
            assert section in REDONE_SECTIONS or (section == name and option in cls.inference_options), (name, key)


def test_glad_is_ranked_on_defects_unlike_the_ones_its_training_pastes():
    """GLAD's ATP repaints Perlin-shaped defects filled from glad.anomalies.source; its --auto proxy uses another
    shape and contents other than that source, and the other methods keep the Perlin proxy from both sources."""
    from ddad.config import AnomalyConfig
    from ddad.methods import RECIPES

    glad = RECIPES["glad"]
    atp = AnomalyConfig()
    assert glad.proxy_shape != atp.shape and atp.source not in proxy_sources(glad.proxy_sources)
    assert all((RECIPES[m].proxy_shape, RECIPES[m].proxy_sources) == ("perlin", "grid,texture")
               for m in ("ddad", "d3ad", "ran"))


def test_the_held_out_halves_are_capped_so_the_selection_cost_does_not_grow_with_the_dataset(tmp_path, monkeypatch):
    import ddad.selection as selection
    from ddad.config import apply_overrides
    from ddad.data.synthetic import SyntheticSpec, make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path, SyntheticSpec(category="object", size=16, n_train=40, n_test_good=1,
                                                          n_test_per_defect=1, seed=2))
    cfg = apply_overrides(DDADConfig(), [f"data.root={root}", "data.image_size=16", "data.val_fraction=0.5"])
    cal, nominal, shared = selection.held_out_split(cfg)  # 20 held out: two halves of 10
    assert cal.shape[0] == nominal.shape[0] == 10 and not shared
    monkeypatch.setattr(selection.proxy, "MAX_HALF", 8)  # where held_out_split reads it
    cal8, nominal8, shared8 = selection.held_out_split(cfg)
    assert cal8.shape[0] == nominal8.shape[0] == 8 and not shared8
    held = torch.cat([cal, nominal])  # every capped image is a held-out one, none in both halves
    for x in torch.cat([cal8, nominal8]):
        assert (held - x).abs().flatten(1).amax(1).min() == 0
    assert (cal8[:, None] - nominal8[None]).abs().flatten(2).amax(2).min() > 0


def test_the_progress_bar_counts_every_image_the_terms_see(tiny_model, tmp_path, monkeypatch, capsys):
    import shutil

    import ddad.selection as selection
    from ddad.detector import Detector

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    bars, seen, real_terms = [], [], Detector.terms_maps

    class Bar(selection.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    def counting_terms(self, images, on_batch=None):
        seen.append(images.shape[0])
        return real_terms(self, images, on_batch)

    monkeypatch.setattr(selection, "tqdm", Bar)
    monkeypatch.setattr(Detector, "terms_maps", counting_terms)
    select_settings(model, ["", "scoring.v=4", "ddad.memory=1"], progress=True, draws=2)
    assert len(bars) == 1 and bars[0].n == bars[0].total == sum(seen)  # the total, raised by probes, is what was done
    assert "select" in capsys.readouterr().err


def test_select_auto_runs_the_methods_grid_on_both_proxy_sources(tiny_model, tmp_path, capsys, monkeypatch):
    import shutil

    from ddad.cli import main
    from ddad.detector import Detector
    from ddad.methods import RECIPES, Recipe

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    monkeypatch.setitem(RECIPES, "ddad", Recipe({"scoring.v": (1, 8)}))  # two candidates: plumbing, not accuracy
    assert main(["select", "--model", str(model), "--auto", "--try", "scoring.sigma=2.0", "--apply"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((model / "selection.json").read_text())
    assert set(saved["rows"]) == {"", "scoring.v=1", "scoring.v=8", "scoring.sigma=2.0"}
    assert saved["best"] in saved["rows"] and saved["best"] == max(
        saved["rows"], key=lambda c: (saved["rows"][c]["image_auroc"], c == ""))  # the proxy image AUROC's best
    assert saved["proxy_sources"] == ["grid", "texture"] and "grid, texture" in out
    n = saved["n_proxy_nominal"]
    k = saved["proxy_draws"]
    assert k == PROXY_DRAWS
    assert sum(saved["draws_won"].values()) == k and isinstance(saved["uncertain"], bool)
    assert all(r["n_images"] == (1 + 2 * k) * n and r["n_anomalous"] == 2 * k * n for r in saved["rows"].values())
    assert all(len(v) == k for v in saved["draw_objectives"].values())
    assert all(set(v) == {"grid", "texture"} and all(0 <= o <= 1 for o in v.values())
               for v in saved["source_objectives"].values()) and set(saved["source_objectives"]) == set(saved["rows"])
    assert "on texture" in out
    assert isinstance(saved["near_chance"], bool) and isinstance(saved["saturated"], bool)
    assert ("WARNING" in out) == (saved["near_chance"] or saved["saturated"] or saved["uncertain"])
    cfg = Detector.load(model).cfg
    want = {"": (1.0, 1.0), "scoring.v=1": (1.0, 1.0), "scoring.v=8": (8.0, 1.0), "scoring.sigma=2.0": (1.0, 2.0)}
    assert (cfg.scoring.v, cfg.scoring.sigma) == want[saved["best"]]


def test_defect_strength_scales_the_pasted_contrast_and_one_is_the_draem_blend():
    from dataclasses import replace

    from ddad.data.anomalies import AnomalySpec

    g = torch.Generator().manual_seed(0)
    nominal = torch.rand(3, 3, 32, 32, generator=g)
    spec = proxy_spec(DDADConfig())
    full = proxy_set(nominal, spec, seed=2)
    assert torch.equal(proxy_set(nominal, replace(spec, strength=1.0), seed=2).images, full.images)
    half = proxy_set(nominal, replace(spec, strength=0.5), seed=2)
    assert torch.equal(half.masks, full.masks)  # the same defects, fainter
    torch.testing.assert_close(half.images[3:] - nominal, 0.5 * (full.images[3:] - nominal), atol=1e-6, rtol=0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength must be in"):
            AnomalySpec(strength=bad)


def test_a_proxy_the_saved_model_aces_is_made_fainter_before_the_candidates_are_scored(tiny_model, tmp_path,
                                                                                       monkeypatch, capsys):
    import shutil

    import ddad.selection as selection
    from ddad.cli import main

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    built, scored = [], []
    real_proxy_set = selection.proxy_set

    def recording_proxy_set(nominal, spec, seed=0, sources=None, draws=1):
        built.append(spec.strength)
        return real_proxy_set(nominal, spec, seed, sources, draws)

    def fake_metrics(det, cfg, cal_maps, maps, proxy):  # every defect found above strength 0.3: stop at 0.25
        scored.append((cfg.scoring.sigma, built[-1]))
        return Metrics(1.0 if built[-1] > 0.3 else 0.9, 0.7, 0.5), (), ()

    monkeypatch.setattr(selection, "proxy_set", recording_proxy_set)
    monkeypatch.setattr(selection, "recombined_metrics", fake_metrics)
    sel = select_settings(model, ["", "scoring.sigma=2.0"], progress=False)
    assert built == [1.0, 0.5, 0.25] and sel.strength == 0.25 and sel.probes == {1.0: 1.0, 0.5: 1.0, 0.25: 0.9}
    assert scored == [(1.0, 1.0), (1.0, 0.5), (1.0, 0.25), (2.0, 0.25)]  # the probe is not scored twice
    assert not sel.saturated
    built.clear(), scored.clear()  # one strength: no adaptation, and a proxy aced by all is flagged
    sel = select_settings(model, ["", "scoring.sigma=2.0"], progress=False, strengths=(1.0,))
    assert built == [1.0] and sel.strength == 1.0 and sel.saturated and "strength 1" in sel.warning()
    built.clear(), scored.clear()  # not aced at full contrast: used as it is (the stand-ins' case)
    monkeypatch.setattr(selection, "recombined_metrics", lambda *a: (Metrics(0.8, 0.7, 0.5), (), ()))
    assert select_settings(model, ["", "scoring.sigma=2.0"], progress=False).strength == 1.0 and built == [1.0]
    with pytest.raises(ValueError, match="proxy strengths"):
        select_settings(model, [""], progress=False, strengths=(0.0,))
    monkeypatch.setattr(selection, "recombined_metrics", fake_metrics)
    assert main(["select", "--model", str(model), "--grid", "scoring.sigma", "2.0", "--apply"]) == 0
    assert "at 0.25 of full contrast" in capsys.readouterr().out
    saved = json.loads((model / "selection.json").read_text())
    assert saved["proxy_strength"] == 0.25 and saved["strength_probes"] == {"1.0": 1.0, "0.5": 1.0, "0.25": 0.9}
    assert main(["select", "--model", str(model), "--grid", "scoring.sigma", "2.0", "--proxy-strength", "0.5"]) == 0
    assert "at 0.5 of full contrast" in capsys.readouterr().out


