"""training/: recipes on a tiny PE-Core (2 blocks, 32 px) with real face crops and a learnable synthetic labelling.

Faces: the astronaut's face (skimage) with label-dependent colour tints (gender: red vs blue, emotion:
green, age: brightness), so a model can learn them; two "data sets" with different missing labels.
"""
from __future__ import annotations

from conftest import require_export_extra

require_export_extra()  # before the imports below, which need it

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage import data as skdata

from export.config import load_backbone_config
from export.model import create_backbone
from training.config import TrainConfigError, load_config
from training.data import DataError, read_labels

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "models" / "pe-core-test-tiny.yaml")
HEADER = ["Path", "Gender", "Age", "Ethnicity", "Facial Emotion", "Identity"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on a shared 2-core machine run fastest on one thread; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tinted_face(face: np.ndarray, gender: int, emotion: int, age: int, rng) -> np.ndarray:
    image = face.astype(np.float32)
    image[..., 0] *= 1.3 if gender == 0 else 0.7
    image[..., 2] *= 0.7 if gender == 0 else 1.3
    image[..., 1] *= 1.3 if emotion == 3 else 0.7
    image *= (0.6, 0.9, 1.2)[age]
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def write_csv(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def make_faces(root: Path, count: int, seed: int) -> list[list]:
    """Face chips + thesis-layout rows; rows alternate between an age+gender and a gender+emotion data set."""
    (root / "chips").mkdir(parents=True, exist_ok=True)
    face = skdata.astronaut()[20:200, 160:310]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        gender, emotion, age = int(rng.integers(2)), (3, 6)[int(rng.integers(2))], int(rng.integers(3))
        name = f"chips/{seed}_{i}.png"
        cv2.imwrite(str(root / name), cv2.cvtColor(tinted_face(face, gender, emotion, age, rng), cv2.COLOR_RGB2BGR))
        ages_set = i % 2 == 0
        rows.append([name, f"{gender}.0", f"{age}.0" if ages_set else "-100.0", "0",
                     "-100.0" if ages_set else f"{emotion}.0", ""])
    return rows


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict:
    """train/val CSVs, their root, and base weights in timm's layout (as a user's PE-Core file would be)."""
    root = tmp_path_factory.mktemp("faces")
    train = write_csv(root / "train.csv", make_faces(root, 64, seed=1))
    val = write_csv(root / "val.csv", make_faces(root, 24, seed=2))
    torch.manual_seed(0)
    backbone = create_backbone(load_backbone_config(TINY))
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(root / "base.safetensors"))
    return {"root": root, "train": train, "val": val, "weights": root / "base.safetensors"}


def tiny_config(faces: dict, out: Path, recipe: str = "dora", *extra: str):
    return load_config(REPO / "configs" / "train" / f"{recipe}.yaml", [
        f"model.backbone={TINY}", f"model.weights={faces['weights']}",
        f"data.train=[{{csv: {faces['train']}, root: {faces['root']}}}]",
        f"data.val=[{{csv: {faces['val']}, root: {faces['root']}}}]",
        f"run.out={out}", "run.epochs=1", "run.batch_size=16", "run.threads=1", "adapter.rank=4", "adapter.alpha=4",
        "model.grad_checkpointing=false", *extra])


# --- data and config errors ----------------------------------------------------------------------------
def test_bad_csvs_are_named(tmp_path, faces):
    codes = tmp_path / "cols.csv"  # no thesis column: a per-image CSV, where a bare gender code means nothing
    codes.write_text("Path,Gender,Age\nchips/1_0.png,0,1\n")
    with pytest.raises(DataError, match="cols.csv:2, column Gender: '0' is a numeric gender code"):
        read_labels(codes, faces["root"])
    bad_value = write_csv(tmp_path / "value.csv", [["chips/1_0.png", "0", "9", "0", "-100", ""]])
    with pytest.raises(DataError, match=r"value.csv:2, column Age: age class index 9 is outside 0\.\.8"):
        read_labels(bad_value, faces["root"])
    missing_file = write_csv(tmp_path / "missing.csv", [["chips/nope.png", "0", "1", "0", "-100", ""]])
    with pytest.raises(DataError, match="not found.*nope.png"):
        read_labels(missing_file, faces["root"])


def test_a_per_image_csv_reads_as_the_same_thesis_csv(tmp_path, faces):
    """The training CSV rewritten with names and age groups (UTKFace/fer2013 style) gives the same labels."""
    from export.heads import THESIS_TASKS
    from runtime.metadata import TASK_ORDER, THESIS_LABELS

    assert tuple(task.lower() for task in THESIS_TASKS) == TASK_ORDER  # training's label columns = the reader's

    def name(task: str, value: str) -> str:
        index = int(float(value))
        return THESIS_LABELS[task][index] if index >= 0 else ""

    thesis = read_labels(faces["train"], faces["root"])
    lines = ["path,age_group,gender_name,emotion"] + [
        f"{row['Path']},{name('age', row['Age'])},{name('gender', row['Gender'])},{name('emotion', row['Facial Emotion'])}"
        for row in csv.DictReader(open(faces["train"]))]
    (tmp_path / "per_image.csv").write_text("\n".join(lines) + "\n")
    named = read_labels(tmp_path / "per_image.csv", faces["root"])
    assert named.paths == thesis.paths and (named.labels == thesis.labels).all()
    assert (thesis.labels == -100).any() and (thesis.labels >= 0).any()


def test_unreadable_image_and_empty_task_are_named(tmp_path, faces):
    from training.train import train

    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [["broken.png", "0", "1", "0", "-100", ""]] * 20
    broken = write_csv(tmp_path / "broken.csv", rows)
    config = tiny_config(faces, tmp_path / "out", "dora", f"data.train=[{{csv: {broken}, root: {tmp_path}}}]",
                         "data.val=[]", "data.tasks=[Age, Gender]")
    with pytest.raises(DataError, match="broken.csv: cannot read image .*broken.png"):  # before training
        train(config)
    png = (faces["root"] / "chips" / "1_0.png").read_bytes()
    (tmp_path / "broken.png").write_bytes(png[:len(png) // 3])  # a PNG signature, truncated data
    with pytest.raises(DataError, match="cannot read image .*broken.png"):  # when the loader reads it
        train(config)
    config = tiny_config(faces, tmp_path / "out", "dora", "data.tasks=[Emotion]",
                         f"data.train=[{{csv: {faces['train']}, root: {faces['root']}}}]")
    # every row has Emotion in half the rows; make a CSV where no row has it
    only_age = write_csv(tmp_path / "only_age.csv", [[r[0], r[1], r[2], r[3], "-100", ""] for r in
                                                      csv.reader(open(faces["train"]))][1:])
    config.data.train[0].csv = str(only_age)
    with pytest.raises(DataError, match="task 'Emotion' has no labels"):
        train(config)
    assert not (tmp_path / "out" / "best").exists()


def test_config_errors_name_the_key():
    with pytest.raises(TrainConfigError, match="--set: optim.lr_typo: unknown key"):
        load_config(REPO / "configs" / "train" / "dora.yaml", ["optim.lr_typo=1"])
    with pytest.raises(TrainConfigError, match="run.epochs: expected int"):
        load_config(REPO / "configs" / "train" / "dora.yaml", ["run.epochs=many"])
    # recipe and adapter.kind together decide the model: a mismatch would train something else than it says
    with pytest.raises(TrainConfigError, match="recipe 'dora' takes adapter.kind dora, not 'lora'"):
        load_config(REPO / "configs" / "train" / "lora.yaml", ["recipe=dora"])
    with pytest.raises(TrainConfigError, match="run.device: 'gpu' is not"):
        load_config(REPO / "configs" / "train" / "dora.yaml", ["run.device=gpu"])


def test_export_command_carries_the_training_crop_margin(faces, tmp_path):
    from training.train import export_command

    config = tiny_config(faces, tmp_path, "dora", "data.crop_margin=0.2")
    assert "--crop-margin 0.2" in export_command(config, tmp_path / "best", writes_backbone=False)
    assert "--crop-margin" not in export_command(tiny_config(faces, tmp_path), tmp_path / "best", False)


# --- losses, samplers, parameter groups ------------------------------------------------------------------
def test_missing_labels_contribute_no_loss_and_no_gradient():
    from training.losses import MultiTaskLoss

    torch.manual_seed(0)
    logits = {"Age": torch.randn(6, 9, requires_grad=True), "Gender": torch.randn(6, 2, requires_grad=True),
              "Emotion": torch.randn(6, 7, requires_grad=True)}
    labels = {"Age": torch.tensor([3, -100, 5, -100, 1, -100]), "Gender": torch.tensor([0, 1, 0, 1, 1, 0]),
              "Emotion": torch.full((6,), -100)}
    loss_fn = MultiTaskLoss(["Age", "Gender", "Emotion"])
    total, parts = loss_fn(logits, labels)
    total.backward()
    valid = labels["Age"] != -100
    expected_age = torch.nn.functional.cross_entropy(logits["Age"][valid], labels["Age"][valid])
    assert parts["Age"] == pytest.approx(float(expected_age.detach()), rel=1e-6)
    assert "Emotion" not in parts and torch.isfinite(total)
    assert torch.all(logits["Age"].grad[~valid] == 0) and torch.all(logits["Age"].grad[valid].abs().sum(1) > 0)
    assert logits["Emotion"].grad is None or torch.all(logits["Emotion"].grad == 0)
    assert loss_fn.log_vars.grad[2] == 0 and loss_fn.log_vars.grad[0] != 0


def test_task_and_class_balanced_sampling():
    from training.samplers import class_balance_weights, task_balanced_indices

    labels = np.full((100, 3), -100)
    labels[:90, 1] = np.r_[np.zeros(80, int), np.ones(10, int)]  # gender 80:10
    labels[90:, 2] = 3                                            # 10 emotion rows
    indices = task_balanced_indices(labels, ["Gender", "Emotion"], share=0.334)
    emotion_share = np.mean(labels[indices, 2] != -100)
    assert 0.33 <= emotion_share <= 0.345 and len(indices) > 100
    weights = class_balance_weights(labels, ["Gender", "Emotion"])
    assert weights.mean() == pytest.approx(1.0)
    assert weights[85] / weights[0] == pytest.approx(8.0)  # the rare gender class weighs 80/10 as much


def test_lora_plus_and_backbone_ratio_groups(tmp_path, faces):
    from training.model import build_training_model
    from training.optim import make_optimizer

    config = tiny_config(faces, tmp_path, "loraplus", "optim.lr=1e-3")
    model = build_training_model(config, load_backbone_config(TINY))
    optimizer = make_optimizer(list(model.named_parameters()), config.optim)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    block_b = [p for n, p in named.items() if n.startswith("backbone.") and "blocks" in n and "lora_B" in n]
    block_a = [p for n, p in named.items() if "blocks" in n and ("lora_A" in n or "magnitude" in n)]
    pool = [p for n, p in named.items() if "attn_pool" in n and p.requires_grad]
    heads = [p for n, p in named.items() if n.startswith("heads.")]
    assert block_b and block_a and pool and heads
    assert [lr_of[id(p)] for p in block_b] == pytest.approx([1e-3 * 0.1 * 6] * len(block_b))
    assert [lr_of[id(p)] for p in block_a] == pytest.approx([1e-4] * len(block_a))
    assert [lr_of[id(p)] for p in pool + heads] == pytest.approx([1e-3] * len(pool + heads))
    assert all(not p.requires_grad for n, p in named.items() if "base_layer" in n)

    config = tiny_config(faces, tmp_path, "partial", "optim.lr=1e-3", "optim.unfreeze_blocks=1")
    model = build_training_model(config, load_backbone_config(TINY))
    lr_of = {n: g["lr"] for g in make_optimizer(list(model.named_parameters()), config.optim).param_groups
             for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert lr_of["backbone.blocks.1.attn.qkv.weight"] == pytest.approx(1e-4)
    assert lr_of["backbone.attn_pool.q.weight"] == pytest.approx(1e-3)
    assert "backbone.blocks.0.attn.qkv.weight" not in lr_of  # frozen

    config = tiny_config(faces, tmp_path, "mtlora", "optim.lr=1e-3")  # λ = 6; the task pools train with the heads
    model = build_training_model(config, load_backbone_config(TINY))
    lr_of = {n: g["lr"] for g in make_optimizer(list(model.named_parameters()), config.optim).param_groups
             for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert lr_of["backbone.block.mlp.c_fc.lora_tasks_B.Age"] == pytest.approx(1e-3 * 0.1 * 6)
    assert lr_of["backbone.block.attn.q.lora_tasks_A.Age"] == pytest.approx(1e-4)
    assert lr_of["backbone.pools.q_proj.lora_tasks_B.Age"] == lr_of["backbone.pools.probe.Age"] == pytest.approx(1e-3)
    assert not any("lora_shared" in n or ".linear." in n for n in lr_of)  # scale 0 / frozen: not optimised


# --- training ---------------------------------------------------------------------------------------------
def test_loss_decreases_and_uncertainty_weights_move(tmp_path, faces):
    from training.train import train

    config = tiny_config(faces, tmp_path / "run", "dora", "run.epochs=10", "optim.lr=1e-2", "augment.enabled=false")
    best, state = train(config)
    losses = [epoch["val_loss"] for epoch in state.history]
    assert losses[-1] < 0.8 * losses[0], losses
    log_vars = state.history and __import__("json").loads((best / "training.json").read_text())["uncertainty_log_vars"]
    assert all(abs(v) > 1e-4 for v in log_vars.values()), log_vars


def test_photos_go_through_the_runtime_detector_once_then_the_cache(tmp_path):
    from runtime.crop import crop_face
    from runtime.detector import FaceDetector
    from training.config import DataSource
    from training.data import load_source

    photo = skdata.astronaut()
    cv2.imwrite(str(tmp_path / "astronaut.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((120, 160, 3), np.uint8))  # no face: row left out
    labels = write_csv(tmp_path / "photos.csv", [["astronaut.png", "1", "3", "0", "3", ""],
                                                 ["blank.png", "0", "2", "0", "-100", ""]])
    source = DataSource(csv=str(labels), root=str(tmp_path), kind="images")
    dataset = load_source(source, 48, 0.1, tmp_path / "cache")
    assert len(dataset) == 1 and dataset.table.labels.tolist() == [[3, 1, 3]]
    with FaceDetector("full_range", running_mode="image") as detector:
        box = detector.detect(photo)[0].box
    np.testing.assert_array_equal(dataset.crop(0), crop_face(photo, box, 48, 0.1))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = load_source(source, 48, 0.1, tmp_path / "cache")
    np.testing.assert_array_equal(again.crop(0), dataset.crop(0))
