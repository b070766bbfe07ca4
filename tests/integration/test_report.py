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
    assert len(images) == 3 + 6  # ROC, PRO, histogram + 6 image panels
    assert not re.search(r'src="(http|/)', html)  # self-contained
    assert "report written to" in capsys.readouterr().out
