"""ROS 2 outputs with real parts: a Cyclone DDS subscriber on loopback receives a real run's REP-155 topics,
the bytes equal rosbags' serialisation from the hri_msgs .msg text, an MCAP file reads back with the mcap and
rosbags readers (also after Ctrl-C), and bad ROS 2 input is one line, exit 2."""
import collections
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("cyclonedds")
pytest.importorskip("rosbags")
pytest.importorskip("mcap_ros2")

from runtime import rep155  # noqa: E402
from runtime.ros2 import messages  # noqa: E402
from runtime.types import (Attributes, Detection, Frame, FrameResult, TaskAttribute, Track, TrackResult,  # noqa: E402
                           TrackState)

REPO = Path(__file__).resolve().parents[1]
CLIP = "samples/face-demographics-walking-and-pause.mp4"
LOOPBACK = ("<CycloneDDS><Domain><General><Interfaces><NetworkInterface address=\"127.0.0.1\"/></Interfaces>"
            "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
            "<Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery></Domain></CycloneDDS>")
RUN_ARGS = ["--set", "policy.interval=0.05", "--set", "events.min_observations=2",
            "--set", "classifier.intra_op_threads=1"]


def typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_HUMBLE)
    for name in messages.HRI:
        store.register(get_types_from_msg(messages.msg_text(name), name))
    return store


def task(labels, label, confidence, observations):
    probs = np.full(len(labels), (1 - confidence) / max(1, len(labels) - 1))
    probs[labels.index(label)] = confidence
    return TaskAttribute(tuple(labels), probs, label, confidence, True, observations)


def result_with(observations: int, state=TrackState.CONFIRMED) -> FrameResult:
    from runtime.metadata import THESIS_LABELS
    detection = Detection((64.0, 48.0, 128.0, 120.0), 0.875, np.zeros((6, 2)))
    track = Track(7, detection.box, detection, hits=5, misses=0, state=state)
    attributes = Attributes({"age": task(THESIS_LABELS["age"], "30-39", 0.5, observations),
                             "gender": task(THESIS_LABELS["gender"], "Female", 0.75, observations),
                             "emotion": task(THESIS_LABELS["emotion"], "Fear", 0.625, observations)},
                            age_years=33.6, observations=observations)
    frame = Frame(np.zeros((240, 320, 3), np.uint8), 3, timestamp=100.25, source="test")
    return FrameResult(frame, [TrackResult(track, attributes)], {})


def test_mapping_values_ids_and_stamps():
    mapper = rep155.Rep155Mapper(frame_id="head_camera", min_observations=3, clock=(100.0, 1_700_000_000_500_000_000))
    assert len(mapper.prefix) == 4 and mapper.prefix.isalpha()
    early = {m.type: m for m in mapper.frame_messages(result_with(observations=2))}
    soft = early[rep155.SOFT_BIOMETRICS].value
    assert (soft.age, soft.gender, soft.age_confidence) == (0, rep155.GENDER_UNDEFINED, 0.0)  # not ready yet
    assert rep155.EXPRESSION not in early
    ready = mapper.frame_messages(result_with(observations=3))
    by_type = {m.type: m for m in ready}
    face = mapper.face_id(7)
    assert by_type[rep155.IDS_LIST].value.ids == [face] and face == mapper.prefix + "7"
    assert by_type[rep155.ROI].topic == f"/humans/faces/{face}/roi"
    roi = by_type[rep155.ROI].value
    assert (roi.xmin, roi.ymin, roi.xmax, roi.ymax, roi.c) == (0.2, 0.2, 0.4, 0.5, 0.875)
    soft = by_type[rep155.SOFT_BIOMETRICS].value
    assert (soft.age, soft.age_confidence, soft.gender, soft.gender_confidence) == (34, 0.5, rep155.GENDER_FEMALE, 0.75)
    expression = by_type[rep155.EXPRESSION].value
    assert expression.expression == "scared" and expression.confidence == 0.625
    assert math.isnan(expression.valence) and math.isnan(expression.arousal)
    header = roi.header
    assert header.frame_id == "head_camera" and (header.stamp.sec, header.stamp.nanosec) == (1_700_000_000, 750_000_000)
    # a tentative track is not listed; a track that goes is dropped from tracked
    assert mapper.frame_messages(result_with(3, TrackState.TENTATIVE))[0].value.ids == [face]  # was confirmed before
    fresh = rep155.Rep155Mapper()
    assert [m.type for m in fresh.frame_messages(result_with(3, TrackState.TENTATIVE))] == [rep155.IDS_LIST]
    empty = FrameResult(result_with(3).frame, [], {})
    assert mapper.frame_messages(empty)[0].value.ids == []


def test_dds_bytes_equal_rosbags_serialisation():
    store = typestore()
    mapper = rep155.Rep155Mapper(frame_id="cam")
    for message in mapper.frame_messages(result_with(observations=3)):
        ours = messages.to_dds(message).serialize()
        cls = store.types[message.type]

        def build(value, cls_name):
            fields = {}
            for name, item in vars(value).items():
                if isinstance(item, rep155.Header):
                    item = store.types["std_msgs/msg/Header"](
                        store.types["builtin_interfaces/msg/Time"](item.stamp.sec, item.stamp.nanosec), item.frame_id)
                elif isinstance(item, float):
                    item = np.float32(item)
                fields[name] = item
            return store.types[cls_name](**fields)

        theirs = bytes(store.serialize_cdr(build(message.value, message.type), message.type))
        assert ours == theirs, message.type
        assert cls.__name__.startswith("hri_msgs__msg__")
        assert type(messages.to_dds(message)).__idl_typename__ == messages.dds_type_name(message.type)


Decoded = collections.namedtuple("Decoded", "schema channel ros_msg")


def test_mcap_reads_back_with_definitions(tiny_model, tmp_path):
    mcap, jsonl = tmp_path / "run.mcap", tmp_path / "run.jsonl"
    done = subprocess.run([sys.executable, "run_camera.py", "--source", CLIP, "--model", str(tiny_model), "--mode",
                           "fast", "--headless", "--mcap", str(mcap), "--mcap-images", "frames", "--jsonl", str(jsonl),
                           *RUN_ARGS], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / ".run.mcap.partial").exists()
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    with open(mcap, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        decoded = [Decoded(schema, channel, ros_msg) for schema, channel, _, ros_msg in reader.iter_decoded_messages()]
    schemas = {schema.name: schema.data.decode() for schema in summary.schemas.values()}
    assert set(schemas) == {*messages.HRI, messages.COMPRESSED_IMAGE}
    assert "MSG: std_msgs/Header" in schemas[rep155.IDS_LIST]
    frames = [json.loads(line) for line in jsonl.read_text().splitlines() if '"frame"' in line]
    frames = [f for f in frames if f["type"] == "frame"]
    tracked = [m for m in decoded if m.channel.topic == rep155.TRACKED_TOPIC]
    assert len(tracked) == len(frames) + 1 and tracked[-1].ros_msg.ids == []  # every frame, then the last word
    images = [m for m in decoded if m.channel.topic == "/facecue/image/compressed"]
    assert len(images) == len(frames)
    first = cv2.imdecode(np.frombuffer(bytes(images[0].ros_msg.data), np.uint8), cv2.IMREAD_COLOR)
    assert first is not None and first.shape[:2] == (cv2.VideoCapture(str(REPO / CLIP)).read()[1].shape[:2])
    kinds = {m.schema.name for m in decoded}
    assert {rep155.ROI, rep155.SOFT_BIOMETRICS, rep155.EXPRESSION} <= kinds
    assert sum(summary.statistics.channel_message_counts.values()) == len(decoded)

    from rosbags.highlevel import AnyReader
    with AnyReader([mcap]) as reader:
        count = sum(1 for connection, _, raw in reader.messages() if reader.deserialize(raw, connection.msgtype))
    assert count == len(decoded)


def _subscribe(domain: int):
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from runtime.ros2.dds import QOS
    participant = DomainParticipant(domain)
    readers = {}

    def reader(name: str, ros_type: str):
        if name not in readers:
            topic = Topic(participant, "rt" + name, messages.DDS_TYPES[ros_type], qos=QOS)
            readers[name] = DataReader(participant, topic, qos=QOS)
        return readers[name]

    return participant, reader, readers


@pytest.mark.slow
def test_dds_subscriber_receives_a_real_run(tiny_model, tmp_path):
    domain = random.randint(100, 200)
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "CYCLONEDDS_URI": LOOPBACK}
    os.environ["CYCLONEDDS_URI"] = LOOPBACK  # this process's participant too (read when it is created)
    participant, reader, readers = _subscribe(domain)
    reader(rep155.TRACKED_TOPIC, rep155.IDS_LIST)
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
    from cyclonedds.core import Policy
    announced = BuiltinDataReader(participant, BuiltinTopicDcpsPublication)  # what the writers say they are
    publications = {}
    jsonl = tmp_path / "run.jsonl"
    process = subprocess.Popen([sys.executable, "run_camera.py", "--source", CLIP, "--model", str(tiny_model),
                                "--headless", "--ros2", "--set", "ros2.frame_id=test_cam", "--set", "source.loop=true",
                                "--max-seconds", "8", "--jsonl", str(jsonl), *RUN_ARGS],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    received = {}  # topic → [message]
    try:
        deadline, ended = time.monotonic() + 120, None
        while time.monotonic() < deadline and (ended is None or time.monotonic() < ended + 1.0):
            for name, one in list(readers.items()):
                for sample in one.take(N=100):
                    if not hasattr(sample, "header"):  # InvalidSample: a writer went (its face left, or the end)
                        continue
                    received.setdefault(name, []).append(sample)
                    if name == rep155.TRACKED_TOPIC:
                        for face in sample.ids:
                            for leaf, kind in (("roi", rep155.ROI), ("softbiometrics", rep155.SOFT_BIOMETRICS),
                                               ("expression", rep155.EXPRESSION)):
                                reader(rep155.face_topic(face, leaf), kind)
            publications.update({p.topic_name: p for p in announced.take(N=100)
                                 if isinstance(getattr(p, "topic_name", None), str)})  # not disposals
            if ended is None and process.poll() is not None:
                ended = time.monotonic()  # drain what is still in flight for a second
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.communicate(timeout=30)[1]
    assert process.returncode == 0, stderr
    # ROS 2 naming and hri_face_detect's QoS, as discovery announces them to any DDS participant
    tracked_publication = publications["rt/humans/faces/tracked"]
    assert tracked_publication.type_name == "hri_msgs::msg::dds_::IdsList_"
    assert isinstance(tracked_publication.qos[Policy.Reliability], Policy.Reliability.Reliable)
    assert tracked_publication.qos[Policy.Durability] == Policy.Durability.Volatile
    assert tracked_publication.qos[Policy.History] == Policy.History.KeepLast(1)
    kinds = {name.rsplit("/", 1)[1]: p.type_name for name, p in publications.items() if name.count("/") == 4}
    assert kinds == {"roi": "hri_msgs::msg::dds_::NormalizedRegionOfInterest2D_",
                     "softbiometrics": "hri_msgs::msg::dds_::SoftBiometrics_", "expression": "hri_msgs::msg::dds_::Expression_"}
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    run = records[0]
    frames = [r for r in records if r["type"] == "frame"]
    wall = {round((run["unix"] + f["timestamp"] - run["monotonic"]) * 1000): f for f in frames}

    def frame_of(header):
        assert header.frame_id == "test_cam"
        ms = (header.stamp.sec + header.stamp.nanosec * 1e-9) * 1000
        near = min(wall, key=lambda key: abs(key - ms))
        assert abs(near - ms) < 20, "a message's stamp matches no frame's capture time"
        return wall[near]

    tracked = received[rep155.TRACKED_TOPIC]
    assert len(tracked) > 20 and tracked[-1].ids == []
    prefix = next(face for sample in tracked for face in sample.ids)[:4]
    ever_confirmed, seen_ids = set(), set()
    for sample in tracked[:-1]:  # the ids are the frame's confirmed tracks, in the JSONL's numbers
        frame = frame_of(sample.header)
        alive = {t["id"] for t in frame["tracks"]}
        ever_confirmed = (ever_confirmed & alive) | {t["id"] for t in frame["tracks"] if t["state"] == "confirmed"}
        assert sample.ids == [f"{prefix}{t['id']}" for t in frame["tracks"] if t["id"] in ever_confirmed]
        seen_ids |= set(sample.ids)
    # lifecycle: a face whose track disappeared mid-run leaves tracked and does not come back
    gone = [r["track_id"] for r in records if r["type"] == "event" and r["event"] == "disappeared"
            and r["media_time"] < frames[-1]["media_time"] - 0.5]
    assert gone, "the clip should lose a face mid-run"
    for track_id in gone:
        face = f"{prefix}{track_id}"
        presence = [face in sample.ids for sample in tracked]
        assert any(presence) and not presence[-1]
        first_gone = presence.index(True) + presence[presence.index(True):].index(False)
        assert not any(presence[first_gone:])
    # field values against the JSONL of the same run
    height, width = cv2.VideoCapture(str(REPO / CLIP)).read()[1].shape[:2]
    rois = [(name, s) for name, samples in received.items() if name.endswith("/roi") for s in samples]
    assert rois
    for name, roi in rois:
        track_id = int(name.split("/")[3][4:])
        track = next(t for t in frame_of(roi.header)["tracks"] if t["id"] == track_id)
        x1, y1, x2, y2 = track["box"]
        assert np.allclose([roi.xmin, roi.ymin, roi.xmax, roi.ymax],
                           np.clip([x1 / width, y1 / height, x2 / width, y2 / height], 0, 1), atol=0.002)
    softs = [(name, s) for name, samples in received.items() if name.endswith("/softbiometrics") for s in samples]
    expressions = [(name, s) for name, samples in received.items() if name.endswith("/expression") for s in samples]
    assert softs and expressions
    for name, soft in softs:
        track = next(t for t in frame_of(soft.header)["tracks"] if t["id"] == int(name.split("/")[3][4:]))
        gender = track["attributes"]["tasks"]["gender"]
        if gender["observations"] >= 2:
            assert soft.gender == rep155.GENDER_CODES[gender["label"]]
            assert soft.gender_confidence == pytest.approx(gender["confidence"], abs=1e-4)
            assert soft.age == round(track["attributes"]["age_years"]) or abs(soft.age - track["attributes"]["age_years"]) <= 0.51
        else:
            assert soft.gender == rep155.GENDER_UNDEFINED
    for name, expression in expressions:
        track = next(t for t in frame_of(expression.header)["tracks"] if t["id"] == int(name.split("/")[3][4:]))
        emotion = track["attributes"]["tasks"]["emotion"]
        assert expression.expression == rep155.EMOTION_TO_EXPRESSION[emotion["label"]]
        assert expression.confidence == pytest.approx(emotion["confidence"], abs=1e-4)
    assert {rep155.face_topic(f, "roi") for f in seen_ids} <= set(received)
    del readers, announced, participant


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_mcap_is_complete_after_ctrl_c_and_sigterm(tmp_path, stop):
    mcap = tmp_path / "run.mcap"
    process = subprocess.Popen([sys.executable, "run_camera.py", "--source", CLIP, "--headless", "--set",
                                "source.loop=true", "--mcap", str(mcap)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    partial = tmp_path / ".run.mcap.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not partial.exists():
        time.sleep(0.1)
    time.sleep(3.0)  # frames flowing (the writer holds messages in a chunk until it fills or closes)
    assert process.poll() is None and not mcap.exists()  # under the temporary name while running
    process.send_signal(stop)
    assert process.wait(timeout=60) == 0  # a stop signal is a clean end (runtime/run.py)
    from mcap.reader import make_reader
    with open(mcap, "rb") as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()  # present only in a finished file
        topics = [channel.topic for _, channel, _ in reader.iter_messages()]
    assert summary is not None and topics.count(rep155.TRACKED_TOPIC) > 10 and topics[-1] == rep155.TRACKED_TOPIC
    assert not partial.exists()


@pytest.mark.parametrize("args, env, message", [
    (["--mcap", "/nonexistent-dir/run.mcap"], {}, "cannot write MCAP to /nonexistent-dir/run.mcap"),
    (["--ros2"], {"ROS_DOMAIN_ID": "abc"}, "ROS_DOMAIN_ID must be an integer"),
    (["--set", "ros2.mcap_images=jpg"], {}, "ros2.mcap_images must be"),
])
def test_bad_ros2_input_is_one_line_exit_2(args, env, message):
    done = subprocess.run([sys.executable, "run_camera.py", "--source", CLIP, "--headless", *args], cwd=REPO,
                          env={**os.environ, "CYCLONEDDS_URI": LOOPBACK, **env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
