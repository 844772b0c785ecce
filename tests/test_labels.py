"""runtime/labels.py: every label CSV layout, read from small CSVs written here, and its errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime.labels import MISSING, LabelsError, read_label_csv
from runtime.metadata import TASK_ORDER, THESIS_LABELS

N = MISSING


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def index(task: str, name: str) -> int:
    return THESIS_LABELS[task].index(name)


def test_thesis_layout_reads_indices_and_dataset_column(tmp_path):
    table = read_label_csv(write(tmp_path, ",Path,Gender,Age,Ethnicity,Facial Emotion,Identity,Dataset\n"
                                           "0,a.jpg,1.0,3.0,2.0,-100.0,7,kids\n"
                                           "1,b.jpg,0,-100,1,5,,\n"
                                           "\n"
                                           "2,c.jpg,-100.0,,0,nan,,\n"))
    assert table.layout == "thesis" and table.tasks == TASK_ORDER
    assert table.paths == ["a.jpg", "b.jpg", "c.jpg"]
    assert table.labels.tolist() == [[3, 1, N], [N, 0, 5], [N, N, N]]
    assert table.datasets == ["kids", None, None]


def test_utkface_style_columns_give_thesis_groups_and_names(tmp_path):
    """UTKFace's header: years and age groups, a numeric gender code with its name beside it (the name wins)."""
    table = read_label_csv(write(tmp_path, "path,age,age_group,gender,gender_name,race,race_name,subset\n"
                                           "x/10_1.jpg,10,10-19,1,female,2,Asian,r\n"
                                           "x/2_0.jpg,2,0-2,0,male,0,White,r\n"
                                           "x/85_0.jpg,85,70+,0,MALE,1,Black,r\n"))
    assert table.layout == "per-image" and table.tasks == ("age", "gender")
    assert table.labels.tolist() == [[index("age", "10-19"), index("gender", "Female"), N],
                                     [index("age", "0-2"), index("gender", "Male"), N],
                                     [index("age", "70+"), index("gender", "Male"), N]]


def test_age_in_years_alone_maps_to_its_group(tmp_path):
    table = read_label_csv(write(tmp_path, "path,age,gender\na,2.9,f\nb,3,woman\nc,69,m\nd,,\n"))
    assert table.labels[:, 0].tolist() == [index("age", "0-2"), index("age", "3-9"), index("age", "60-69"), N]
    assert table.labels[:, 1].tolist() == [1, 1, 0, N]


def test_fer2013_label_column_is_emotion(tmp_path):
    table = read_label_csv(write(tmp_path, "path,label,usage\ntest/angry/1.jpg,angry,PrivateTest\n"
                                           "train/happy/2.jpg,Happy,Training\n"))
    assert table.tasks == ("emotion",)
    assert table.labels[:, 2].tolist() == [index("emotion", "Angry"), index("emotion", "Happy")]
    assert (table.labels[:, :2] == N).all()


def test_emotion_7class_names_and_adjectives(tmp_path):
    names = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "surprised", "fearful", "disgusted"]
    table = read_label_csv(write(tmp_path, "path,emotion_7class\n" + "".join(f"{n}.jpg,{n}\n" for n in names)))
    want = ["Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise", "Surprise", "Fear", "Disgust"]
    assert table.labels[:, 2].tolist() == [index("emotion", n) for n in want]


def test_long_layout_gathers_one_row_per_image(tmp_path):
    table = read_label_csv(write(tmp_path, "path,task,label\na,gender,Female\na,age_years,25\nb,emotion,3\n"
                                           "a,emotion,-100\n"))
    assert table.layout == "long" and table.paths == ["a", "b"] and table.tasks == TASK_ORDER
    assert table.labels.tolist() == [[index("age", "20-29"), 1, N], [N, N, 3]]


@pytest.mark.parametrize("text, message", [
    ("path,gender\na.jpg,1\n", "labels.csv:2, column gender: '1' is a numeric gender code, and codes differ"),
    ("path,emotion\na.jpg,0\n", "column emotion: '0' is a numeric emotion code"),
    ("path,emotion\na.jpg,contempt\n", "column emotion: unknown emotion label 'contempt' (Surprise, Fear"),
    ("path,age_group\na.jpg,0-9\n", "column age_group: '0-9' is not an age in years or an age group (0-2, 3-9"),
    ("path,label,gender\na.jpg,happy,male\n", "a label column beside ['gender'] columns is ambiguous"),
    ("path,task,label,age\na.jpg,gender,male,3\n", "mix path,task,label with per-task columns (ambiguous)"),
    ("path,race,subset\na.jpg,1,x\n", "columns ['path', 'race', 'subset'] name no task; accepted: the thesis layout"),
    ("file,emotion\na.jpg,happy\n", "columns ['file', 'emotion'] have no path column"),
    ("path,task,label\na,gender,male\na,gender,female\n", "labels.csv:3: a second, different gender label for a"),
    ("path,gender\n\n", "no rows under the header"),
    ("Path,Gender,Age,Ethnicity,Facial Emotion\na.jpg,0,9,0,0\n", "column Age: age class index 9 is outside 0..8"),
    (",Path,Gender,Age,Facial Emotion\n0,,0,1,2\n", "labels.csv:2: empty path"),
])
def test_bad_headers_and_values_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(LabelsError) as error:
        read_label_csv(write(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(LabelsError, match="label CSV .*nope.csv not found"):
        read_label_csv(tmp_path / "nope.csv")
