"""`ddad benchmark` on tiny synthetic data: DDAD and the anomalib PatchCore baseline in one table."""
import json

import pytest

from ddad.cli import main


def test_benchmark_table_has_both_methods(tiny_object, tmp_path, capsys):
    pytest.importorskip("anomalib", reason="PatchCore baseline needs anomalib (pip install -e '.[benchmark]')")
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(tiny_object), "--out", str(out), "--ddad-steps", "2",
            "--set", "data.image_size=32", "--set", "model.preset=cpu-32", "--set", "train.steps=3",
            "--set", "train.batch_size=4", "--set", "scoring.sigma=1.0", "--set", "features.layers=[1,2]"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "DDAD-2 (cpu-32, 32px)" in printed and "PatchCore" in printed and "commit" in printed
    rows = json.loads((out / "benchmark.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["pixel_auroc"] is not None and r["pro"] is not None for r in rows.values())
    assert main([*args, "--reuse", "--methods", "ddad"]) == 0  # evaluates the saved model without training


def test_patchcore_writes_per_image_results_that_give_its_row(tiny_object, tmp_path):
    pytest.importorskip("anomalib", reason="PatchCore baseline needs anomalib (pip install -e '.[benchmark]')")
    from ddad.metrics import compute_metrics
    from ddad.report import load_evaluation, per_defect_metrics

    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(tiny_object), "--out", str(out), "--methods", "patchcore",
            "--set", "data.image_size=32", "--set", "features.input_size=64"]
    assert main(args) == 0
    row = json.loads((out / "benchmark.json").read_text())["rows"]
    (name, m), = row.items()
    assert "backbone at 64px" in name
    records, scores, labels, maps, masks = load_evaluation(out / "patchcore")
    assert maps.shape == masks.shape == (len(records), 32, 32)  # maps back at the images' size, where masks are
    again = compute_metrics(scores, labels, maps.astype("float32"), masks)
    assert again.image_auroc == pytest.approx(m["image_auroc"]) and again.pro == pytest.approx(m["pro"], abs=2e-3)
    per = per_defect_metrics(records, scores, labels, maps.astype("float32"), masks)
    assert set(per) == {r["defect_type"] for r in records} - {"good"}


def test_benchmark_auto_evaluates_the_label_free_choice_and_names_it(tiny_object, tmp_path, capsys, monkeypatch):
    from ddad.detector import Detector
    from ddad.methods import RECIPES, Recipe

    monkeypatch.setitem(RECIPES, "ddad", Recipe({"scoring.v": (1, 8)}))  # plumbing, not accuracy
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(tiny_object), "--out", str(out), "--ddad-steps", "2", "--methods", "ddad",
            "--set", "data.image_size=32", "--set", "model.preset=cpu-32", "--set", "train.steps=3",
            "--set", "train.batch_size=4", "--set", "scoring.sigma=1.0", "--set", "features.layers=[1,2]", "--auto"]
    assert main(args) == 0
    best = json.loads((out / "ddad" / "selection.json").read_text())["best"]
    (name,) = json.loads((out / "benchmark.json").read_text())["rows"]
    assert name == f"DDAD-2 (cpu-32, 32px, auto: {best or 'as configured'})" and name in capsys.readouterr().out
    assert Detector.load(out / "ddad").cfg.scoring.v == {"": 1.0, "scoring.v=1": 1.0, "scoring.v=8": 8.0}[best]
    monkeypatch.delitem(RECIPES, "ddad")
    assert main([*args, "--reuse"]) == 2  # refused before anything runs: the method has no auto grid


def test_patchcore_coreset_selects_exactly_anomalibs_indices():
    """The reused-buffer k-center-greedy (no N x d allocation per step) picks the same coreset as anomalib's."""
    pytest.importorskip("anomalib", reason="PatchCore baseline needs anomalib (pip install -e '.[benchmark]')")
    import numpy as np
    import torch
    from anomalib.models.components.sampling import KCenterGreedy

    from ddad.baselines.patchcore import _kcenter_greedy

    e = torch.randn(3000, 64, generator=torch.Generator().manual_seed(0))
    out = []
    for fn in (lambda: _kcenter_greedy(e, 0.05, seed=1), lambda: KCenterGreedy(e, 0.05).sample_coreset()):
        torch.manual_seed(1)  # anomalib's sampler starts from a patch drawn from torch's global generator
        np.random.seed(1)  # anomalib's random projection draws from numpy's global generator
        out.append(fn())
    assert out[0].shape == (150, 64) and torch.equal(out[0], out[1])
    torch.manual_seed(2)  # seeded: the global generators' states do not change the coreset, nor are they changed
    np.random.seed(2)
    state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    assert torch.equal(_kcenter_greedy(e, 0.05, seed=1), out[0])
    assert torch.equal(torch.get_rng_state(), state) and np.array_equal(np.random.get_state()[1], np_state)
