"""In a ROS 2 workspace (colcon test): the node starts on a sample clip and publishes /humans/faces/tracked."""
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
hri_msgs = pytest.importorskip("hri_msgs.msg")

CLIP = Path(__file__).resolve().parents[3] / "samples" / "face-demographics-walking-and-pause.mp4"


def test_node_publishes_tracked():
    from rclpy.parameter import Parameter

    from facecue_ros.node import QOS, FacecueNode
    rclpy.init()
    try:
        listener = rclpy.create_node("facecue_test_listener")
        received = []
        listener.create_subscription(hri_msgs.IdsList, "/humans/faces/tracked", received.append, QOS)
        node = FacecueNode(parameter_overrides=[Parameter("source", value=str(CLIP)), Parameter("mode", value="fast")])
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(listener)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (received and received[-1].ids == [] and not node.worker.is_alive()):
            executor.spin_once(timeout_sec=0.1)
        assert any(message.ids for message in received) and received[-1].ids == []
    finally:
        rclpy.shutdown()
