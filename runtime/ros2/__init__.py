"""ROS 2 transports for facecue's REP-155 messages (runtime/rep155.py): live DDS (dds.py) and MCAP (mcap_sink.py),
sinks beside the JSONL writer. They need the `ros2` extra (`pip install -e .[ros2]`)."""
from __future__ import annotations

from typing import Callable

from runtime.rep155 import Rep155Mapper


class Ros2Error(ValueError):
    """--ros2 / --mcap cannot start: the ros2 extra is missing, ROS_DOMAIN_ID is malformed, or DDS cannot start
    (bad input: one line, exit 2)."""


def open_sinks(config, render: Callable | None = None) -> list:
    """The sinks config.ros2 asks for (none by default), sharing one mapper so the ids agree.
    `render`: FrameResult → overlay image, for ros2.mcap_images=overlay. Raises OSError for an unwritable file."""
    ros2 = config.ros2
    if not ros2.enabled and not ros2.mcap:
        return []
    mapper = Rep155Mapper(frame_id=ros2.frame_id, min_observations=config.events.min_observations)
    sinks = []
    try:
        if ros2.mcap:
            from runtime.ros2.mcap_sink import McapSink
            sinks.append(McapSink(ros2.mcap, mapper, ros2.mcap_images, ros2.jpeg_quality, render))
        if ros2.enabled:
            from runtime.ros2.dds import DdsSink
            sinks.append(DdsSink(mapper, ros2.domain_id))
    except ImportError as error:
        for sink in sinks:
            sink.close()
        raise Ros2Error(f"ROS 2 output needs the ros2 extra ({error.name} missing): pip install -e '.[ros2]'") from None
    except OSError:
        for sink in sinks:
            sink.close()
        raise
    except Exception as error:  # a bad ROS_DOMAIN_ID, or Cyclone DDS cannot create its participant (CYCLONEDDS_URI)
        for sink in sinks:
            sink.close()
        raise Ros2Error(f"cannot start DDS: {error}") from None
    return sinks
