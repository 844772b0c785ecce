"""calibration/: temperature fitting, ECE, label mapping, and `python -m calibration temperature` end to end."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from calibration.__main__ import main
from calibration.errors import CalibrationError
from calibration.labels import Label, read_labels
from calibration.metrics import ece, nll, softmax
from calibration.modelfile import write_with_document
from calibration.temperature import fit_task, fit_temperature
from helpers_faces import face_patches
from runtime.metadata import build_document, parse_document, read_model_info


def test_fit_recovers_a_known_temperature_and_helps_on_held_out_logits():
    """True probabilities softmax(z); labels drawn from them; the model's logits are z × k (over-confident)."""
    rng = np.random.default_rng(0)
    k = 2.5
    z = rng.normal(0.0, 1.5, (20000, 7))
    p = softmax(z)
    labels = (rng.random((len(z), 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    logits = z * k
    fit, held = slice(0, 10000), slice(10000, None)
    temperature = fit_temperature(logits[fit], labels[fit])
    assert temperature == pytest.approx(k, rel=0.05)
    assert nll(logits[held], labels[held], temperature) < nll(logits[held], labels[held]) - 0.05
    assert ece(softmax(logits[held], temperature), labels[held]) < 0.5 * ece(softmax(logits[held]), labels[held])


def test_a_fit_that_stops_at_its_bound_warns(caplog):
    """Logits that carry nothing about the labels want T → ∞ and stop at max_temperature; logits that are
    right but far too flat stop at min_temperature. A fit inside the range says nothing."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (400, 5))
    noise_labels = rng.integers(0, 5, len(logits))
    caplog.set_level(logging.WARNING, logger="calibration.temperature")
    fit = fit_task("age", logits, noise_labels, 1.0, 0.05, 20.0, bins=10)
    assert fit.temperature == pytest.approx(20.0, rel=1e-3)
    assert [r.getMessage() for r in caplog.records] == [
        "age: the fitted temperature stopped at its bound 20 (temperature.max_temperature): the best T may lie "
        "beyond it; the logits say little about these labels (random weights, or labels that do not match the model?)"]
    caplog.clear()
    fit = fit_task("emotion", logits * 1e-3, logits.argmax(1), 1.0, 0.05, 20.0, bins=10)
    assert fit.temperature == pytest.approx(0.05, rel=1e-3)
    assert "temperature.min_temperature" in caplog.text and caplog.records[0].getMessage().startswith("emotion: ")
    caplog.clear()
    z = rng.normal(0.0, 1.5, (2000, 5))
    labels = (rng.random((len(z), 1)) > np.cumsum(softmax(z), axis=1)).sum(axis=1)
    fit = fit_task("gender", z * 2.0, labels, 1.0, 0.05, 20.0, bins=10)
    assert 1.5 < fit.temperature < 2.5 and not caplog.records


def test_ece_matches_a_hand_worked_example():
    probs = np.array([[0.90, 0.05, 0.05],   # correct, conf 0.90 → bin (0.8, 1.0]
                      [0.15, 0.75, 0.10],   # wrong,   conf 0.75 → bin (0.6, 0.8]
                      [0.58, 0.22, 0.20],   # correct, conf 0.58 → bin (0.4, 0.6]
                      [0.28, 0.20, 0.52],   # correct, conf 0.52 → bin (0.4, 0.6]
                      [0.35, 0.33, 0.32]])  # wrong,   conf 0.35 → bin (0.2, 0.4]
    labels = np.array([0, 0, 0, 2, 1])
    # ECE = 1/5·|1−0.90| + 1/5·|0−0.75| + 2/5·|1−0.55| + 1/5·|0−0.35| = 0.02 + 0.15 + 0.18 + 0.07
    assert ece(probs, labels, bins=5) == pytest.approx(0.42)


def info(tasks=("age", "gender", "emotion")):
    return parse_document(build_document(list(tasks), 32, "test", "dora"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_thesis_layout_with_index_column_and_missing_labels(tmp_path):
    csv = write(tmp_path / "labels.csv", ",Path,Gender,Age,Ethnicity,Facial Emotion,Identity\n"
                "0,a.jpg,1.0,3.0,2.0,-100.0,7\n"
                "1,b.jpg,0,-100,1,5,\n"
                "2,c.jpg,-100.0,,0,nan,\n")
    assert read_labels(csv, info()) == [Label("a.jpg", "age", 3), Label("a.jpg", "gender", 1),
                                        Label("b.jpg", "gender", 0), Label("b.jpg", "emotion", 5)]
    # a gender-only model takes the gender column and ignores the rest
    assert read_labels(csv, info(["gender"])) == [Label("a.jpg", "gender", 1), Label("b.jpg", "gender", 0)]


def test_path_task_label_names_indices_and_ages(tmp_path):
    csv = write(tmp_path / "labels.csv", "path,task,label\n"
                "h.jpg,emotion,HAPPY\n"    # fer2013 folder name, case-insensitive
                "d.jpg,emotion,disgust\n"
                "f.jpg,Gender,female\n"
                "i.jpg,age,4\n"            # class index
                "n.jpg,age,70+\n"          # label name
                "y0.jpg,age_years,2.9\n"
                "y1.jpg,age_years,3\n"
                "y2.jpg,age_years,25\n"
                "y3.jpg,age_years,94\n"
                "m.jpg,emotion,-100\n"    # missing: no label
                "m.jpg,age_years,-100\n")
    assert [(l.task, l.index) for l in read_labels(csv, info())] == [
        ("emotion", 3), ("emotion", 2), ("gender", 1), ("age", 4), ("age", 8), ("age", 0), ("age", 1), ("age", 3),
        ("age", 8)]


@pytest.mark.parametrize("text, message", [
    ("path,task,label\na.jpg,emotion,contempt\n", "unknown emotion label 'contempt'"),
    ("path,task,label\na.jpg,ethnicity,2\n", "task 'ethnicity' is not one of age, gender, emotion or age_years"),
    ("path,task,label\na.jpg,gender,2\n", "gender class index 2 is outside 0..1"),
    ("path,task,label\na.jpg,age_years,old\n", "'old' is not an age in years"),
    ("Path,Gender,Age,Facial Emotion\na.jpg,male,3,0\n", "column Gender: 'male' is not a class index"),
    ("path,gender,age\na.jpg,1,30\n", "column gender: '1' is a numeric gender code"),
    ("Path,Age\na.jpg,3\n", "columns for tasks ['age'], but the model has tasks ['gender']"),
    ("file,y\na.jpg,3\n", "columns ['file', 'y'] have no path column; accepted: the thesis layout"),
    ("Path,Gender\na.jpg,-100\n", "no labels for the model's tasks"),
    ("path,task,label\na.jpg,gender,-100\n", "no labels for the model's tasks"),
])
def test_bad_labels_are_named(tmp_path, text, message):
    tasks = ["gender"] if "Path,Age" in text or "Path,Gender\n" in text else ["age", "gender", "emotion"]
    with pytest.raises(CalibrationError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
        read_labels(write(tmp_path / "labels.csv", text), info(tasks))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path]:
    """Chips of 3 real faces with 4 variants each, labelled with made-up genders/emotions in path,task,label form."""
    root = tmp_path_factory.mktemp("labelled")
    rows = ["path,task,label"]
    for face_index, face in enumerate(face_patches(80)):
        for variant, (flip, gain) in enumerate([(False, 1.0), (True, 1.0), (False, 0.8), (True, 1.2)]):
            chip = np.clip((face[:, ::-1] if flip else face) * gain, 0, 255).astype(np.uint8)
            name = f"face{face_index}/v{variant}.png"
            (root / name).parent.mkdir(exist_ok=True)
            cv2.imwrite(str(root / name), chip[..., ::-1])
            rows += [f"{name},gender,{('Male', 'Female')[(face_index + variant) % 2]}",
                     f"{name},emotion,{('happy', 'sad', 'neutral')[(face_index + variant) % 3]}"]
    return root, write(root / "labels.csv", "\n".join(rows) + "\n")


def test_temperature_command_writes_a_new_model_and_diagrams(tiny_model, labelled, tmp_path, capsys):
    root, labels = labelled
    out = tmp_path / "tiny.calibrated.onnx"
    before = tiny_model.read_bytes()
    assert main(["temperature", "--model", str(tiny_model), "--labels", str(labels), "--crops", str(root),
                 "--out", str(out)]) == 0
    assert tiny_model.read_bytes() == before  # the source is untouched
    calibrated = read_model_info(out)
    assert calibrated.task("age").temperature == 1.0  # no age labels: unchanged
    for task in ("gender", "emotion"):
        entry = next(t for t in calibrated.document["tasks"] if t["name"] == task)
        assert entry["temperature"] != 1.0 and entry["calibration"]["samples"] == 12
        nll_before, nll_after = entry["calibration"]["nll"]
        assert nll_after <= nll_before + 1e-9
        assert (tmp_path / f"tiny.calibrated.reliability-{task}.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert "NLL before" in table and "gender" in table and "emotion" in table
    assert {k: v for k, v in calibrated.document.items() if k != "tasks"} == \
           {k: v for k, v in read_model_info(tiny_model).document.items() if k != "tasks"}


def test_temperature_in_place_and_bad_labels_leave_nothing(tiny_model, labelled, tmp_path, capsys):
    root, labels = labelled
    copy = tmp_path / "model.onnx"
    copy.write_bytes(tiny_model.read_bytes())
    bad = write(tmp_path / "bad.csv", "path,task,label\nface0/v0.png,emotion,contempt\n")
    assert main(["temperature", "--model", str(copy), "--labels", str(bad), "--crops", str(root)]) == 2
    assert "unknown emotion label 'contempt'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "model.onnx"]
    few = write(tmp_path / "few.csv", "path,task,label\n" + "".join(f"face0/v{i}.png,gender,male\n" for i in range(3)))
    assert main(["temperature", "--model", str(copy), "--labels", str(few), "--crops", str(root)]) == 2
    assert "only 3 usable gender labels" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "few.csv", "model.onnx"]
    assert main(["temperature", "--model", str(copy), "--labels", str(labels), "--crops", str(root), "--in-place",
                 "--plots", str(tmp_path / "plots")]) == 0
    assert read_model_info(copy).task("gender").temperature != 1.0
    assert len(list((tmp_path / "plots").glob("*.png"))) == 2


def test_per_image_labels_fit_as_the_same_labels_in_long_form(tiny_model, labelled, tmp_path):
    """The chips' labels as a fer2013/UTKFace-style per-image CSV give the temperatures the long form gives."""
    root, long_form = labelled
    rows = {}
    for path, task, label in (line.split(",") for line in long_form.read_text().splitlines()[1:]):
        rows.setdefault(path, {})[task] = label.lower()
    per_image = write(tmp_path / "per_image.csv", "path,gender_name,emotion_7class,usage\n" + "".join(
        f"{path},{labels['gender']},{labels['emotion']},Training\n" for path, labels in rows.items()))
    temperatures = []
    for labels in (long_form, per_image):
        out = tmp_path / f"{labels.stem}.onnx"
        assert main(["temperature", "--model", str(tiny_model), "--labels", str(labels), "--crops", str(root),
                     "--out", str(out)]) == 0
        temperatures.append([read_model_info(out).task(t).temperature for t in ("gender", "emotion")])
    assert temperatures[0] == temperatures[1] and 1.0 not in temperatures[0]


def test_labels_outside_the_root_are_named(tiny_model, labelled, tmp_path, capsys):
    _, labels = labelled
    (tmp_path / "elsewhere").mkdir()
    assert main(["temperature", "--model", str(tiny_model), "--labels", str(labels), "--crops",
                 str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "none of the 12 labelled files is under" in err


def test_images_without_faces_are_named(tiny_model, tmp_path, capsys):
    from helpers_faces import background

    cv2.imwrite(str(tmp_path / "rocket.png"), background(320, 240))
    labels = write(tmp_path / "labels.csv", "path,task,label\nrocket.png,gender,male\n")
    assert main(["temperature", "--model", str(tiny_model), "--labels", str(labels), "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no usable face" in err and "no face found" in err
    assert not list(tmp_path.glob("*.onnx"))


def test_external_data_models_keep_working(tiny_model, tmp_path):
    """A model whose weights live in `<model>.onnx.data` (as L14 exports do) gets its own sidecar."""
    source = tmp_path / "big.onnx"
    onnx.save(onnx.load(str(tiny_model)), str(source), save_as_external_data=True, location="big.onnx.data",
              size_threshold=0)
    document = read_model_info(source).document
    document["tasks"][1]["temperature"] = 1.7
    out = write_with_document(source, tmp_path / "big.calibrated.onnx", document)
    assert (tmp_path / "big.calibrated.onnx.data").is_file()
    (tmp_path / "big.onnx.data").rename(tmp_path / "moved.data")  # the new model does not lean on the old data
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(["gender"], {"images": np.zeros((1, 32, 32, 3), np.uint8)})[0].shape == (1, 2)
    assert read_model_info(out).task("gender").temperature == 1.7
