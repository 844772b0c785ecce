"""runtime.rep155 message values → ROS message objects, for any message classes built with keyword fields
(rclpy's hri_msgs / std_msgs / builtin_interfaces, or rosbags' generated classes, which the tests use)."""
from __future__ import annotations

from dataclasses import fields, is_dataclass


def to_ros(value, classes: dict):
    """`classes` maps the rep155 dataclass name ("Header", "Time", "IdsList", ...) to the ROS class."""
    if not is_dataclass(value):
        return value
    kwargs = {f.name: to_ros(getattr(value, f.name), classes) for f in fields(value)}
    return classes[type(value).__name__](**kwargs)


def rclpy_classes() -> dict:
    from builtin_interfaces.msg import Time
    from hri_msgs.msg import Expression, IdsList, NormalizedRegionOfInterest2D, SoftBiometrics
    from std_msgs.msg import Header
    return {"Time": Time, "Header": Header, "IdsList": IdsList, "NormalizedRegionOfInterest2D": NormalizedRegionOfInterest2D,
            "SoftBiometrics": SoftBiometrics, "Expression": Expression}
