"""REP-155 messages recorded into an MCAP file (ROS 2 profile, CDR, definitions embedded) with Foxglove's
mcap-ros2-support writer; `ros2 bag play` (rosbag2_storage_mcap) and Foxglove open it.

Optionally the frames or the overlay go in too, as sensor_msgs/CompressedImage (JPEG) on IMAGE_TOPIC.
Written like the JSONL: under `.NAME.partial`, finished (summary and index) and renamed by close(), so a
file under the final name is always complete; run.py calls close() after Ctrl-C and SIGTERM too.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from mcap_ros2.writer import Writer

from runtime import rep155
from runtime.ros2.messages import COMPRESSED_IMAGE, HRI, full_definition
from runtime.types import FaceEvent, FrameResult

IMAGE_TOPIC = "/facecue/image/compressed"
IMAGE_CHOICES = ("none", "frames", "overlay")


class McapSink:
    def __init__(self, path: str | Path, mapper: rep155.Rep155Mapper, images: str = "none", jpeg_quality: int = 80,
                 render: Callable[[FrameResult], np.ndarray] | None = None):
        if images not in IMAGE_CHOICES:
            raise ValueError(f"MCAP images must be one of {IMAGE_CHOICES}, got {images!r}")
        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.name}.partial")
        self.mapper = mapper
        self.images = images
        self.jpeg_quality = jpeg_quality
        self.render = render  # FrameResult → overlay image (images="overlay")
        try:
            self._file = open(self.temporary, "wb")
        except OSError as error:
            raise OSError(f"cannot write MCAP to {self.path}: {error.strerror}") from error
        self._writer = Writer(self._file)
        self._schemas = {name: self._writer.register_msgdef(name, full_definition(name))
                         for name in (*HRI, *([COMPRESSED_IMAGE] if images != "none" else []))}
        self._lock = threading.Lock()
        self.messages = 0

    def write_frame(self, result: FrameResult) -> None:
        messages = self.mapper.frame_messages(result)
        if self.images != "none":
            image = self.render(result) if self.images == "overlay" and self.render else result.frame.image
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if ok:
                header = messages[0].value.header  # the tracked list's: the frame's capture time
                messages.append(rep155.Message(IMAGE_TOPIC, COMPRESSED_IMAGE,
                                               {"header": rep155.as_dict(header), "format": "jpeg",
                                                "data": jpeg.tobytes()}, messages[0].stamp_ns))
        self.write(messages)

    def write(self, messages: list[rep155.Message]) -> None:
        with self._lock:
            if self._writer is None:
                return
            for message in messages:
                value = message.value if isinstance(message.value, dict) else rep155.as_dict(message.value)
                self._writer.write_message(message.topic, self._schemas[message.type], value,
                                           log_time=message.stamp_ns, publish_time=message.stamp_ns)
            self.messages += len(messages)

    def write_event(self, event: FaceEvent) -> None:
        """Nothing: the messages follow the per-frame tracks, as on the live topics."""

    def close(self) -> None:
        if self._writer is None:
            return
        self.write([self.mapper.empty_tracked()])
        with self._lock:
            writer, self._writer = self._writer, None
            writer.finish()
            self._file.close()
            os.replace(self.temporary, self.path)
