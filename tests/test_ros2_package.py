"""ros2/facecue_ros (the rclpy node): its package files agree, and the conversion it publishes with turns the
REP-155 mapping into message objects whose bytes equal facecue's DDS bytes. rclpy itself is not installable
here: the node's own test (ros2/facecue_ros/test) skips without it."""
import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("cyclonedds")

from runtime import rep155  # noqa: E402
from runtime.ros2 import messages  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "ros2" / "facecue_ros"


def test_package_files_agree():
    root = ElementTree.parse(PACKAGE / "package.xml").getroot()
    assert root.findtext("name") == "facecue_ros"
    assert root.find("export/build_type").text == "ament_python"
    assert {"rclpy", "hri_msgs"} <= {element.text for element in root.findall("exec_depend")}
    assert (PACKAGE / "resource" / "facecue_ros").exists()
    setup = (PACKAGE / "setup.py").read_text()
    assert 'PACKAGE = "facecue_ros"' in setup and "facecue_node = {PACKAGE}.node:main" in setup
    launch = (PACKAGE / "launch" / "facecue.launch.py").read_text()
    assert 'executable="facecue_node"' in launch
    for path in [*PACKAGE.glob("facecue_ros/*.py"), *PACKAGE.glob("launch/*.py"), *PACKAGE.glob("test/*.py")]:
        ast.parse(path.read_text(), str(path))  # valid Python (they import rclpy, so they are not run here)


def test_node_conversion_gives_the_same_bytes(monkeypatch):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    monkeypatch.syspath_prepend(str(PACKAGE))
    sys.modules.pop("facecue_ros", None)
    from facecue_ros.convert import to_ros

    store = get_typestore(Stores.ROS2_HUMBLE)
    for name in messages.HRI:
        store.register(get_types_from_msg(messages.msg_text(name), name))
    classes = {"Time": store.types["builtin_interfaces/msg/Time"], "Header": store.types["std_msgs/msg/Header"],
               **{name.rsplit("/", 1)[1]: store.types[name] for name in messages.HRI}}
    header = rep155.Header(rep155.Time(1_700_000_000, 123), "camera")
    values = [rep155.IdsList(header, ["abcd1", "abcd2"]),
              rep155.NormalizedRegionOfInterest2D(header, 0.25, 0.5, 0.75, 1.0, 0.875),
              rep155.SoftBiometrics(header, 34, 0.5, rep155.GENDER_MALE, 0.75),
              rep155.Expression(header, "happy", float("nan"), float("nan"), 0.625)]
    for value, ros_type in zip(values, messages.HRI):
        ros = to_ros(value, classes)
        assert type(ros).__name__ == ros_type.replace("/", "__")
        ours = messages.to_dds(rep155.Message("/x", ros_type, value, 0)).serialize()
        assert bytes(store.serialize_cdr(ros, ros_type)) == ours
        assert np.isnan(ros.valence) if ros_type == rep155.EXPRESSION else True
