"""Label-free selection of inference settings on a proxy set of synthetic defects (ddad.selection)."""
import json

import pytest
import torch

from ddad.config import DDADConfig
from ddad.selection import candidates_from_grid, proxy_set, proxy_spec, select_settings, split_candidate


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
        assert 0 <= m.extra["objective"] <= 1 and m.n_images == 2 * sel.n_proxy and m.n_anomalous == sel.n_proxy
    assert Detector.load(model).cfg == Detector.load(tiny_model).cfg  # trying candidates leaves the model alone
    assert main(["select", "--model", str(model), "--grid", "scoring.sigma", "0.5", "3.0", "--apply"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((model / "selection.json").read_text())
    assert set(saved["rows"]) == {"", "scoring.sigma=0.5", "scoring.sigma=3.0"} and saved["best"] in out
    want = {"": 1.0, "scoring.sigma=0.5": 0.5, "scoring.sigma=3.0": 3.0}[saved["best"]]
    assert Detector.load(model).cfg.scoring.sigma == want
    with pytest.raises(ValueError, match="other settings"):  # a trained section is not an inference setting
        select_settings(model, ["model.preset=cpu-64"], progress=False)
