import numpy as np
import pytest
import torch
from PIL import Image

from ddad.data import DatasetLayoutError, ImageReadError, collate, load_dataset, read_image, read_mask, seeded_split
from ddad.data.synthetic import CLEAR_DEFECTS as DEFECTS


def test_mvtec_layout_counts_and_sample_type(tiny_object):
    train = load_dataset("mvtec", tiny_object, "train", image_size=32)
    test = load_dataset("mvtec", tiny_object.parent, "test", category="object", image_size=32)
    assert len(train) == 12 and set(train.labels) == {0}
    assert len(test) == 4 + 2 * len(DEFECTS)
    s = test[len(test) - 1]
    assert s.image.shape == (3, 32, 32) and s.image.dtype == torch.float32
    assert 0 <= s.image.min() and s.image.max() <= 1
    assert s.label == 1 and s.mask is not None and s.mask.sum() > 0
    assert set(torch.unique(s.mask).tolist()) <= {0.0, 1.0}
    good = test[test.labels.index(0)]
    assert good.label == 0 and good.defect_type == "good" and good.mask.sum() == 0
    batch = collate([good, test[len(test) - 1]])
    assert batch.images.shape == (2, 3, 32, 32) and batch.masks.shape == (2, 1, 32, 32)


def test_mask_resize_is_nearest_and_binary(tmp_path):
    m = np.zeros((40, 40), np.uint8)
    m[10:11, :] = 255  # a one-pixel-thin defect must survive downscaling, not be blurred away
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", size=20)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    up = read_mask(tmp_path / "m.png", size=80)
    assert up.sum() == 2 * 80  # nearest upscaling doubles the line exactly


def test_grey_rgba_and_16bit_images(tmp_path):
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((8, 8, 4), 200, np.uint8), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(tmp_path / "h.png")
    for name, value in (("g", 128 / 255), ("a", 200 / 255), ("h", 0.5)):
        t = read_image(tmp_path / f"{name}.png")
        assert t.shape == (3, 8, 8)
        assert float(t.mean()) == pytest.approx(value, abs=0.01)


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.png", "text.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)


def test_missing_folders_and_masks_give_clear_errors(tmp_path, tiny_object):
    with pytest.raises(DatasetLayoutError, match="train/good"):
        load_dataset("mvtec", tmp_path, "train")
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no images"):
        load_dataset("mvtec", tmp_path, "train")
    (tmp_path / "test" / "scratch").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "test" / "scratch" / "000.png")
    with pytest.raises(DatasetLayoutError, match="000_mask.png"):
        load_dataset("mvtec", tmp_path, "test")
    with pytest.raises(ValueError, match="choose one of"):
        load_dataset("mvtecc", tiny_object, "train")


def test_seeded_split_is_deterministic_and_order_free(tmp_path):
    paths = [tmp_path / f"{i}.jpg" for i in range(50)]
    a = seeded_split(paths, 0.8, seed=3)
    b = seeded_split(list(reversed(paths)), 0.8, seed=3)
    assert a == b and len(a[0]) == 40 and not set(a[0]) & set(a[1])
    assert seeded_split(paths, 0.8, seed=4) != a


def _img(path, value=100, size=16, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def test_mtd_layout(tmp_path):
    for i in range(10):
        _img(tmp_path / "MT_Free" / "Imgs" / f"f{i}.jpg")
    _img(tmp_path / "MT_Crack" / "Imgs" / "c0.jpg")
    soft = np.zeros((16, 16), np.uint8)
    soft[4:8, 4:8] = 127  # soft edge: below 128 is not a defect
    soft[5:7, 5:7] = 200
    Image.fromarray(soft).save(tmp_path / "MT_Crack" / "Imgs" / "c0.png")
    train = load_dataset("mtd", tmp_path, "train", image_size=16)
    test = load_dataset("mtd", tmp_path, "test", image_size=16)
    assert len(train) == 8 and len(test) == 3
    crack = [test[i] for i in range(len(test)) if test[i].label == 1][0]
    assert crack.defect_type == "crack" and crack.mask.sum() == 4


def test_btad_visa_folder_layouts(tmp_path):
    b = tmp_path / "btad" / "01"
    _img(b / "train" / "ok" / "0.bmp"), _img(b / "test" / "ok" / "1.bmp"), _img(b / "test" / "ko" / "2.bmp")
    _img(b / "ground_truth" / "ko" / "2.png", 255, mode="L")
    assert len(load_dataset("btad", b.parent, "test", category="01")) == 2

    v = tmp_path / "visa"
    _img(v / "candle" / "Data" / "Images" / "Normal" / "0.JPG")
    _img(v / "candle" / "Data" / "Images" / "Anomaly" / "1.JPG")
    lab = np.zeros((16, 16), np.uint8)
    lab[2:4, 2:4] = 1  # VisA masks hold label indices: 1 is a defect
    (v / "candle" / "Data" / "Masks" / "Anomaly").mkdir(parents=True)
    Image.fromarray(lab).save(v / "candle" / "Data" / "Masks" / "Anomaly" / "1.png")
    (v / "split_csv").mkdir()
    (v / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "candle,train,normal,candle/Data/Images/Normal/0.JPG,\n"
        "candle,test,anomaly,candle/Data/Images/Anomaly/1.JPG,candle/Data/Masks/Anomaly/1.png\n"
    )
    vt = load_dataset("visa", v, "test", category="candle")
    assert len(vt) == 1 and vt[0].mask.sum() == 4
    with pytest.raises(Exception, match="candle"):
        load_dataset("visa", v, "test", category="fryum")

    f = tmp_path / "folder"
    for i in range(5):
        _img(f / "good" / f"{i}.png", mode="L")  # grayscale input -> 3 channels
    _img(f / "bad" / "x.png")
    _img(f / "masks" / "bad" / "x.png", 255, mode="L")
    ft = load_dataset("folder", f, "test")
    assert len(load_dataset("folder", f, "train")) == 4 and len(ft) == 2
    assert ft[0].image.shape[0] == 3 and ft[1].mask.sum() == 16 * 16
