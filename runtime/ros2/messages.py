"""The ROS 2 message definitions facecue publishes: .msg text (for rosbags and MCAP schemas) and the same
types as Cyclone DDS IDL structs with ROS 2's DDS names (`pkg::msg::dds_::Name_`).

The .msg files of hri_msgs are in runtime/ros2/msg/ (ATTRIBUTION.md there); std_msgs/Header,
builtin_interfaces/Time and sensor_msgs/CompressedImage are ROS 2's common_interfaces definitions.
Cyclone DDS's Python binding has no .msg parser, so the four hri_msgs structs are written out below; a test
checks that their bytes equal rosbags' serialisation from the .msg text.
"""
# (no `from __future__ import annotations`: Cyclone DDS reads the field annotations as real types)

from dataclasses import dataclass
from pathlib import Path

from cyclonedds.idl import IdlStruct, types

from runtime import rep155

MSG_DIR = Path(__file__).with_name("msg")
COMMON = {
    "builtin_interfaces/msg/Time": "int32 sec\nuint32 nanosec\n",
    "std_msgs/msg/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "sensor_msgs/msg/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data\n",
}
HRI = (rep155.IDS_LIST, rep155.ROI, rep155.SOFT_BIOMETRICS, rep155.EXPRESSION)
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"


def msg_text(ros_type: str) -> str:
    """The .msg text of one type, e.g. msg_text("hri_msgs/msg/IdsList")."""
    if ros_type in COMMON:
        return COMMON[ros_type]
    return (MSG_DIR / (ros_type.rsplit("/", 1)[1] + ".msg")).read_text(encoding="utf-8")


def full_definition(ros_type: str) -> str:
    """The type's text followed by its dependencies in ROS 2's concatenated form (as rosbag2 stores it)."""
    parts = [msg_text(ros_type)]
    for dependency in ("std_msgs/msg/Header", "builtin_interfaces/msg/Time"):
        if dependency != ros_type:
            package, _, name = dependency.split("/")
            parts.append("=" * 80 + f"\nMSG: {package}/{name}\n" + msg_text(dependency))
    return "\n".join(parts)


def dds_type_name(ros_type: str) -> str:
    package, _, name = ros_type.split("/")
    return f"{package}::msg::dds_::{name}_"


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: types.int32
    nanosec: types.uint32


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time
    frame_id: str


@dataclass
class IdsList(IdlStruct, typename="hri_msgs::msg::dds_::IdsList_"):
    header: Header
    ids: types.sequence[str]


@dataclass
class NormalizedRegionOfInterest2D(IdlStruct, typename="hri_msgs::msg::dds_::NormalizedRegionOfInterest2D_"):
    header: Header
    xmin: types.float32
    ymin: types.float32
    xmax: types.float32
    ymax: types.float32
    c: types.float32


@dataclass
class SoftBiometrics(IdlStruct, typename="hri_msgs::msg::dds_::SoftBiometrics_"):
    header: Header
    age: types.uint8
    age_confidence: types.float32
    gender: types.uint8
    gender_confidence: types.float32


@dataclass
class Expression(IdlStruct, typename="hri_msgs::msg::dds_::Expression_"):
    header: Header
    expression: str
    valence: types.float32
    arousal: types.float32
    confidence: types.float32


DDS_TYPES = {rep155.IDS_LIST: IdsList, rep155.ROI: NormalizedRegionOfInterest2D,
             rep155.SOFT_BIOMETRICS: SoftBiometrics, rep155.EXPRESSION: Expression}


def to_dds(message: rep155.Message):
    """The Cyclone DDS value of a mapped message."""
    value = message.value
    header = Header(Time(value.header.stamp.sec, value.header.stamp.nanosec), value.header.frame_id)
    fields = {name: item for name, item in vars(value).items() if name != "header"}
    return DDS_TYPES[message.type](header=header, **fields)
