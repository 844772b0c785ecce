"""random_checkpoint → export → verify, end to end through the CLIs, on the tiny backbone."""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

import cv2
import numpy as np
from skimage import data

from export.__main__ import main as export_main
from export.cli import run_main
from export.random_checkpoint import main as random_main
from export.verify import main as verify_main
from runtime.metadata import read_model_info

BACKBONE = "pe-core-test-tiny"


def write_faces(tmp_path):
    """A photo for --images (faces found by the runtime's detector) and a face chip for --crops."""
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    (tmp_path / "images").mkdir()
    (tmp_path / "crops").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "astronaut.png"), photo)
    cv2.imwrite(str(tmp_path / "crops" / "astronaut-face.png"), photo[40:190, 160:280])
    return tmp_path / "images", tmp_path / "crops"


def test_random_checkpoint_exports_and_verifies(tmp_path, capsys):
    assert run_main(random_main, ["--backbone", BACKBONE, "--out", str(tmp_path / "rc"), "--rank", "4"]) == 0
    weights = tmp_path / "rc" / "RANDOM-PE-Core-TEST-TINY.pt"
    adapters = tmp_path / "rc" / "RANDOM-TEST-TINY-dora-adapters"
    inputs = ["--backbone", BACKBONE, "--weights", str(weights), "--adapters", str(adapters)]
    model = tmp_path / "model.onnx"
    assert run_main(export_main, [*inputs, "--out", str(model)]) == 0
    info = read_model_info(model)
    assert info.random_weights and info.adapter == "dora" and info.task_names == ["age", "gender", "emotion"]

    images, crops = write_faces(tmp_path)
    for faces in (["--images", str(images)], ["--crops", str(crops)]):
        capsys.readouterr()
        assert run_main(verify_main, [str(model), *inputs, *faces, "--json", str(tmp_path / "v.json")]) == 0
        out = capsys.readouterr().out
        assert "PASS" in out and out.count("faces ") == 3

    # Other adapters (another seed) must fail verification: the check can tell models apart.
    assert run_main(random_main, ["--backbone", BACKBONE, "--out", str(tmp_path / "rc2"), "--rank", "4",
                                  "--seed", "1"]) == 0
    other = ["--backbone", BACKBONE, "--weights", str(weights), "--adapters", str(tmp_path / "rc2" / "RANDOM-TEST-TINY-dora-adapters")]
    assert run_main(verify_main, [str(model), *other, "--crops", str(crops)]) == 1
    assert "FAIL" in capsys.readouterr().out
