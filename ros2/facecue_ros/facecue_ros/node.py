"""The facecue Pipeline as a ROS 2 node: REP-155 topics with rclpy and hri_msgs (runtime/rep155.py maps,
this node only publishes). Parameters: source, model, config (a facecue YAML profile), frame_id, mode.

    ros2 run facecue_ros facecue_node --ros-args -p source:=0 -p model:=/opt/facecue/model.onnx
    ros2 launch facecue_ros facecue.launch.py source:=0 model:=/opt/facecue/model.onnx
"""
from __future__ import annotations

import threading
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile

from facecue_ros.convert import rclpy_classes, to_ros
from runtime import rep155
from runtime.config import load_config
from runtime.pipeline import Pipeline

QOS = QoSProfile(depth=1)  # hri_face_detect's: keep last 1, reliable, volatile


class FacecueNode(Node):
    def __init__(self, **node_options):
        super().__init__("facecue", **node_options)
        source = self.declare_parameter("source", "0").value
        model = self.declare_parameter("model", "").value
        profile = self.declare_parameter("config", "").value
        mode = self.declare_parameter("mode", "realtime").value
        frame_id = self.declare_parameter("frame_id", "camera").value
        overrides = [f"source.uri='{source}'", f"source.mode={mode}", "overlay.show=false"]
        if model:
            overrides.append(f"classifier.model='{model}'")
        config = load_config(profile or None, overrides)
        self.pipeline = Pipeline(config)
        clock = (time.monotonic(), self.get_clock().now().nanoseconds)  # capture time → ROS time
        self.mapper = rep155.Rep155Mapper(frame_id=frame_id, min_observations=config.events.min_observations,
                                          clock=clock)
        self.classes = rclpy_classes()
        self.publishers_by_topic = {}
        self.worker = threading.Thread(target=self._run, name="facecue-pipeline", daemon=True)
        self.worker.start()

    def _publisher(self, message: rep155.Message):
        publisher = self.publishers_by_topic.get(message.topic)
        if publisher is None:
            kind = self.classes[message.type.rsplit("/", 1)[1]]
            publisher = self.publishers_by_topic[message.topic] = self.create_publisher(kind, message.topic, QOS)
        return publisher

    def publish(self, messages: list[rep155.Message]) -> None:
        for message in messages:
            self._publisher(message).publish(to_ros(message.value, self.classes))
        tracked = next((m.value.ids for m in messages if m.topic == rep155.TRACKED_TOPIC), None)
        if tracked is not None:  # a face that left: its publishers go
            keep = {rep155.face_topic(face, "") for face in tracked}
            for topic in [t for t in self.publishers_by_topic
                          if t != rep155.TRACKED_TOPIC and t.rsplit("/", 1)[0] + "/" not in keep]:
                self.destroy_publisher(self.publishers_by_topic.pop(topic))

    def _run(self) -> None:
        try:
            self.pipeline.run(lambda result: self.publish(self.mapper.frame_messages(result)) or rclpy.ok())
        except Exception as error:  # the node says why and stops; the launch file's respawn may restart it
            self.get_logger().error(f"the pipeline failed: {error}")
        finally:
            self.pipeline.close()
            if rclpy.ok():
                self.publish([self.mapper.empty_tracked()])

    def shutdown(self) -> None:
        self.pipeline.stop()
        self.worker.join(timeout=10)


def main(argv=None) -> None:
    rclpy.init(args=argv)
    node = FacecueNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
