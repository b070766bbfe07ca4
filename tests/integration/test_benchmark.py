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
