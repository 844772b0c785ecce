"""Live REP-155 topics over DDS with ROS 2 naming, through Cyclone DDS's Python binding (no ROS install).

ROS name `/humans/faces/tracked` → DDS topic `rt/humans/faces/tracked`, type `hri_msgs::msg::dds_::IdsList_`
(runtime/ros2/messages.py), so ROS 2 nodes with rmw_cyclonedds_cpp on the same domain see them.
QoS as hri_face_detect's publishers: reliable, volatile, keep last 1. Domain: `ros2.domain_id`, else
$ROS_DOMAIN_ID, else 0. The writers of a face's topics are deleted when the face leaves `tracked`.
"""
from __future__ import annotations

import os
import threading

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter, Publisher
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from runtime import rep155
from runtime.ros2.messages import DDS_TYPES, to_dds
from runtime.types import FaceEvent, FrameResult

QOS = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)), Policy.Durability.Volatile,
          Policy.History.KeepLast(1))


def domain_from_env(override: int | None = None) -> int:
    if override is not None:
        return override
    text = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) > 232:
        raise ValueError(f"ROS_DOMAIN_ID must be an integer 0..232, got {text!r}")
    return int(text)


def dds_topic(ros_name: str) -> str:
    return "rt/" + ros_name.lstrip("/")


class DdsSink:
    """A sink (like runtime.jsonl.JsonlWriter): publishes each processed frame's REP-155 messages."""

    def __init__(self, mapper: rep155.Rep155Mapper, domain_id: int | None = None):
        self.mapper = mapper
        self.domain_id = domain_from_env(domain_id)
        self.participant = DomainParticipant(self.domain_id)
        self.publisher = Publisher(self.participant)
        self._writers: dict[str, DataWriter] = {}
        self._lock = threading.Lock()
        self.messages = 0

    def _writer(self, message: rep155.Message) -> DataWriter:
        writer = self._writers.get(message.topic)
        if writer is None:
            topic = Topic(self.participant, dds_topic(message.topic), DDS_TYPES[message.type], qos=QOS)
            writer = self._writers[message.topic] = DataWriter(self.publisher, topic, qos=QOS)
        return writer

    def publish(self, messages: list[rep155.Message]) -> None:
        with self._lock:
            if self.participant is None:
                return
            for message in messages:
                self._writer(message).write(to_dds(message))
            self.messages += len(messages)
            tracked = next((m.value.ids for m in messages if m.topic == rep155.TRACKED_TOPIC), None)
            if tracked is not None:  # faces that left: their writers (and topics) go
                keep = {rep155.TRACKED_TOPIC} | {rep155.face_topic(face, "") for face in tracked}
                for name in [n for n in self._writers if n.rsplit("/", 1)[0] + "/" not in keep
                             and n != rep155.TRACKED_TOPIC]:
                    del self._writers[name]

    def write_frame(self, result: FrameResult) -> None:
        self.publish(self.mapper.frame_messages(result))

    def write_event(self, event: FaceEvent) -> None:
        """Nothing: the topics follow the per-frame tracks (a face leaves `tracked` when its track is removed)."""

    def close(self) -> None:
        """Publish an empty `tracked` (so subscribers drop every face), then leave the domain."""
        if self.participant is None:
            return
        self.publish([self.mapper.empty_tracked()])
        with self._lock:
            self._writers.clear()
            self.publisher = self.participant = None
