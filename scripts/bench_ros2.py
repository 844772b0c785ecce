"""Cost of the ROS 2 outputs (runtime/rep155.py, runtime/ros2): per-frame time to map and publish 5 faces over
DDS (no subscriber, and with a Cyclone DDS subscriber in this process on loopback), to record them to MCAP
without and with JPEG frames, the message rate per topic and the MCAP size per minute.

    python scripts/bench_ros2.py [--frames 300] [--fps 30] [--json build/bench-ros2.json]

Frames are the sample clip's (480x270); the 5 faces are synthetic tracks with ready attributes, so every topic
is published on every frame (the most a run sends). DDS is kept on the loopback interface.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("CYCLONEDDS_URI", "<CycloneDDS><Domain><General><Interfaces><NetworkInterface address=\"127.0.0.1\"/>"
                      "</Interfaces><AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto"
                      "</ParticipantIndex><Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery></Domain></CycloneDDS>")

from runtime import rep155  # noqa: E402
from runtime.metadata import THESIS_LABELS  # noqa: E402
from runtime.types import Attributes, Detection, Frame, FrameResult, TaskAttribute, Track, TrackResult, TrackState  # noqa: E402

CLIP = REPO / "samples" / "face-demographics-walking-and-pause.mp4"
FACES = 5


def clip_frames() -> list[np.ndarray]:
    capture, images = cv2.VideoCapture(str(CLIP)), []
    while True:
        ok, image = capture.read()
        if not ok:
            return images
        images.append(image)


def ready(task: str, label: str) -> TaskAttribute:
    labels = THESIS_LABELS[task]
    probs = np.full(len(labels), 0.3 / (len(labels) - 1))
    probs[labels.index(label)] = 0.7
    return TaskAttribute(tuple(labels), probs, label, 0.7, True, 5)


def results(images: list[np.ndarray], count: int, fps: float) -> list[FrameResult]:
    attributes = Attributes({"age": ready("age", "30-39"), "gender": ready("gender", "Female"),
                             "emotion": ready("emotion", "Happy")}, age_years=34.2, observations=5)
    start, out = time.monotonic(), []
    for index in range(count):
        image = images[index % len(images)]
        tracks = []
        for face in range(FACES):
            box = (10.0 + 90 * face, 60.0 + index % 20, 70.0 + 90 * face, 130.0 + index % 20)
            detection = Detection(box, 0.9, np.zeros((6, 2)))
            tracks.append(TrackResult(Track(face + 1, box, detection, 10, 0, TrackState.CONFIRMED), attributes))
        out.append(FrameResult(Frame(image, index, start + index / fps, "bench"), tracks, {}))
    return out


def timed(frames: list[FrameResult], write) -> list[float]:
    times = []
    for result in frames:
        began = time.perf_counter()
        write(result)
        times.append((time.perf_counter() - began) * 1000.0)
    return times


def row(name: str, times: list[float], extra: dict | None = None) -> dict:
    ordered = sorted(times)
    return {"case": name, "frames": len(times), "mean_ms": round(statistics.fmean(times), 3),
            "median_ms": round(statistics.median(times), 3), "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            **(extra or {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate assumed for rates and MCAP size per minute")
    parser.add_argument("--json", default="build/bench-ros2.json")
    args = parser.parse_args(argv)
    from runtime.ros2.dds import QOS, DdsSink, dds_topic
    from runtime.ros2.mcap_sink import McapSink
    from runtime.ros2.messages import DDS_TYPES

    frames = results(clip_frames(), args.frames, args.fps)
    rows = []
    mapper = rep155.Rep155Mapper()
    rows.append(row("map only (rep155)", timed(frames, mapper.frame_messages)))
    counts: dict[str, int] = {}
    for message in mapper.frame_messages(frames[0]):
        leaf = "tracked" if message.topic == rep155.TRACKED_TOPIC else message.topic.rsplit("/", 1)[1]
        counts[leaf] = counts.get(leaf, 0) + 1

    domain = 150 + os.getpid() % 50
    sink = DdsSink(rep155.Rep155Mapper(), domain)
    rows.append(row("DDS, no subscriber", timed(frames, sink.write_frame)))
    sink.close()

    from cyclonedds.domain import DomainParticipant
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    mapper = rep155.Rep155Mapper()
    subscriber = DomainParticipant(domain)
    readers = [DataReader(subscriber, Topic(subscriber, dds_topic(m.topic), DDS_TYPES[m.type], qos=QOS), qos=QOS)
               for m in mapper.frame_messages(frames[0])]
    sink = DdsSink(mapper, domain)
    time.sleep(1.0)  # discovery
    times = timed(frames, sink.write_frame)
    time.sleep(0.2)
    got = sum(1 for reader in readers if reader.take(N=1))  # keep-last-1: each topic's last sample
    rows.append(row("DDS, subscriber on loopback", times, {"topics_received": f"{got}/{len(readers)}"}))
    sink.close()

    with tempfile.TemporaryDirectory() as directory:
        for images in ("none", "frames"):
            path = Path(directory) / f"bench-{images}.mcap"
            sink = McapSink(path, rep155.Rep155Mapper(), images=images)
            times = timed(frames, sink.write_frame)
            sink.close()
            per_minute = path.stat().st_size / len(frames) * args.fps * 60 / 1e6
            rows.append(row(f"MCAP, images={images}", times, {"mb_per_minute": round(per_minute, 2)}))

    rates = {topic: count * args.fps for topic, count in counts.items()}
    print(f"{FACES} faces, {len(frames)} frames of {CLIP.name} ({frames[0].frame.image.shape[1]}x"
          f"{frames[0].frame.image.shape[0]}), rates and sizes at {args.fps:g} fps")
    print(f"{'case':32} {'mean ms':>8} {'median':>8} {'p95':>8}  extra")
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("case", "frames", "mean_ms", "median_ms", "p95_ms")}
        print(f"{r['case']:32} {r['mean_ms']:8.3f} {r['median_ms']:8.3f} {r['p95_ms']:8.3f}  {extra or ''}")
    print("messages/s per topic kind (all faces together):", rates)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"faces": FACES, "fps": args.fps, "rows": rows, "rates_hz": rates,
                                           "messages_per_frame": counts}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
