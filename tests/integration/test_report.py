"""`ddad report` rebuilds a self-contained HTML page from an evaluation folder's saved files only."""
import re

from ddad.cli import main
from ddad.data import load_dataset
from ddad.detector import Detector
from ddad.pipeline import run_evaluate


def test_report_from_saved_files(tiny_model, tiny_object, tmp_path, capsys):
    det = Detector.load(tiny_model)
    ds = load_dataset("mvtec", tiny_object, "test", image_size=32)
    run_evaluate(det, ds, tmp_path / "eval", progress=False)
    for name in ("metrics.json", "scores.json", "maps.npy", "masks.npy", "inputs.npy", "reconstructions.npy",
                 "calibration.json"):
        assert (tmp_path / "eval" / name).is_file(), name
    del det  # the report needs no model
    assert main(["report", str(tmp_path / "eval"), "--worst", "6"]) == 0
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "I-AUROC" in html and "PRO" in html and "hardest first" in html
    images = re.findall(r'<img src="(data:image/png;base64,[^"]+)"', html)
    assert len(images) == 3 + 1 + 6 * 5  # ROC, PRO, histogram, colour scale + 6 rows of 5 tiles
    # the run is named; the image grid has column headers; a colour scale; a per-defect-type table
    assert "<title>ddad report: " in html and "<h1>ddad report: " in html
    for header in ("input", "reconstruction", "heatmap", "ground truth", "predicted mask"):
        assert f"<th>{header}</th>" in html
    assert "heatmap colour scale" in html and "table.grid{width:100%}" in html
    defect_types = {p.name for p in (tiny_object / "test").iterdir()} - {"good"}
    rows = re.findall(r"<tr><td>([a-z_]+)</td><td>(\d+)</td>", html)
    assert {name for name, _ in rows} == defect_types
    assert all(int(n) == len(list((tiny_object / "test" / name).iterdir())) for name, n in rows)
    assert not re.search(r'src="(http|/)', html)  # self-contained
    assert "report written to" in capsys.readouterr().out
