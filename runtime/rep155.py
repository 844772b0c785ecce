"""facecue results as REP-155 (ROS4HRI) message values, independent of the transport.

One `Rep155Mapper` per run turns each processed frame into the messages a face-perception node publishes
(REP-155, https://www.ros.org/reps/rep-0155.html; fields as in ros4hri/hri_msgs 2.0.0, whose .msg files are
in runtime/ros2/msg/):

- `/humans/faces/tracked` (hri_msgs/IdsList): every processed frame, the ids of the confirmed faces
  (a track enters at its first confirmed frame, i.e. with `appeared`, and leaves when the tracker drops it);
- `/humans/faces/<id>/roi` (NormalizedRegionOfInterest2D): the box of each listed face detected in this
  frame, normalised to [0, 1], `c` the detector's score (a face predicted through a miss has no roi);
- `/humans/faces/<id>/softbiometrics` (SoftBiometrics): age in years (Σ p·centroid, rounded) with the
  smoothed probability of the shown age group as confidence, gender MALE/FEMALE with its smoothed
  probability; UNDEFINED (and age 0, confidence 0) until the task has `min_observations` classifications;
- `/humans/faces/<id>/expression` (Expression): the thesis' seven emotions as Expression strings
  (EMOTION_TO_EXPRESSION), confidence the smoothed probability, once the task is ready. valence and
  arousal are NaN: the classifier predicts categories only, and we publish no guessed circumplex values.

Face ids are strings unique across restarts: a random 4-letter prefix per run + the track number ("kqzb7").
Header stamps are the frame's capture time (monotonic) mapped to wall time through a clock pair taken
at start, as the JSONL run record does.
The transports (runtime/ros2/dds.py, runtime/ros2/mcap_sink.py, ros2/facecue_ros) only serialise these.
"""
from __future__ import annotations

import math
import random
import string
import time
from dataclasses import dataclass, field

from runtime.types import FrameResult, TrackResult, TrackState

EMOTION_TO_EXPRESSION = {"Surprise": "surprised", "Fear": "scared", "Disgust": "disgusted", "Happy": "happy",
                         "Sad": "sad", "Angry": "angry", "Neutral": "neutral"}
GENDER_UNDEFINED, GENDER_FEMALE, GENDER_MALE = 0, 1, 2
GENDER_CODES = {"Female": GENDER_FEMALE, "Male": GENDER_MALE}
TRACKED_TOPIC = "/humans/faces/tracked"

IDS_LIST = "hri_msgs/msg/IdsList"
ROI = "hri_msgs/msg/NormalizedRegionOfInterest2D"
SOFT_BIOMETRICS = "hri_msgs/msg/SoftBiometrics"
EXPRESSION = "hri_msgs/msg/Expression"


@dataclass(frozen=True)
class Time:
    sec: int
    nanosec: int


@dataclass(frozen=True)
class Header:
    stamp: Time
    frame_id: str


@dataclass(frozen=True)
class IdsList:
    header: Header
    ids: list[str]


@dataclass(frozen=True)
class NormalizedRegionOfInterest2D:
    header: Header
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    c: float


@dataclass(frozen=True)
class SoftBiometrics:
    header: Header
    age: int
    age_confidence: float
    gender: int
    gender_confidence: float


@dataclass(frozen=True)
class Expression:
    header: Header
    expression: str
    valence: float
    arousal: float
    confidence: float


@dataclass(frozen=True)
class Message:
    topic: str  # ROS name, e.g. /humans/faces/abcd3/roi
    type: str  # ROS type, e.g. hri_msgs/msg/IdsList
    value: object  # one of the dataclasses above
    stamp_ns: int  # the header stamp in nanoseconds (bag log time)


def face_topic(face_id: str, leaf: str) -> str:
    return f"/humans/faces/{face_id}/{leaf}"


def as_dict(value) -> dict:
    """A message value as nested plain dicts (the form mcap_ros2's writer and rclpy helpers take)."""
    return {name: as_dict(item) if hasattr(item, "__dataclass_fields__") else item
            for name, item in vars(value).items()}


@dataclass
class Rep155Mapper:
    frame_id: str = "camera"
    min_observations: int = 3  # events.min_observations: a task is published once it has this many readings
    prefix: str = field(default_factory=lambda: "".join(random.choices(string.ascii_lowercase, k=4)))
    # (time.monotonic(), time.time_ns()) at start: wall time in integer ns, since a float loses ~0.2 µs at 1.7e9 s
    clock: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), time.time_ns()))
    _confirmed: set[int] = field(default_factory=set)

    def face_id(self, track_id: int) -> str:
        return f"{self.prefix}{track_id}"

    def stamp(self, monotonic: float) -> Time:
        nanoseconds = self.clock[1] + int(round((monotonic - self.clock[0]) * 1e9))
        return Time(nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000)

    def frame_messages(self, result: FrameResult) -> list[Message]:
        """The messages of one processed frame: tracked first, then each listed face's roi/softbiometrics/expression."""
        stamp = self.stamp(result.frame.timestamp)
        header = Header(stamp, self.frame_id)
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        alive = {item.track.id for item in result.tracks}
        self._confirmed &= alive  # a removed track never comes back under the same number
        self._confirmed |= {item.track.id for item in result.tracks if item.track.state is TrackState.CONFIRMED}
        listed = [item for item in result.tracks if item.track.id in self._confirmed]
        messages = [Message(TRACKED_TOPIC, IDS_LIST, IdsList(header, [self.face_id(i.track.id) for i in listed]),
                            stamp_ns)]
        height, width = result.frame.image.shape[:2]
        for item in listed:
            face = self.face_id(item.track.id)
            values = [(ROI, "roi", self.roi(header, item, width, height)),
                      (SOFT_BIOMETRICS, "softbiometrics", self.soft_biometrics(header, item)),
                      (EXPRESSION, "expression", self.expression(header, item))]
            messages += [Message(face_topic(face, leaf), kind, value, stamp_ns)
                         for kind, leaf, value in values if value is not None]
        return messages

    def empty_tracked(self, monotonic: float | None = None) -> Message:
        """The last word of a run: no face is tracked any more (subscribers drop their faces)."""
        stamp = self.stamp(time.monotonic() if monotonic is None else monotonic)
        return Message(TRACKED_TOPIC, IDS_LIST, IdsList(Header(stamp, self.frame_id), []),
                       stamp.sec * 1_000_000_000 + stamp.nanosec)

    def roi(self, header: Header, item: TrackResult, width: int, height: int) -> NormalizedRegionOfInterest2D | None:
        detection = item.track.detection
        if detection is None:
            return None
        x1, y1, x2, y2 = item.track.box
        clip = lambda v: min(1.0, max(0.0, float(v)))  # noqa: E731
        return NormalizedRegionOfInterest2D(header, clip(x1 / width), clip(y1 / height), clip(x2 / width),
                                            clip(y2 / height), clip(detection.score))

    def _ready(self, item: TrackResult, task: str):
        reading = item.attributes.tasks.get(task)
        if reading is None or reading.label is None or reading.observations < self.min_observations:
            return None
        return reading

    def soft_biometrics(self, header: Header, item: TrackResult) -> SoftBiometrics | None:
        tasks = item.attributes.tasks
        if "age" not in tasks and "gender" not in tasks:
            return None  # the model has neither head (or there is no model)
        age, gender = self._ready(item, "age"), self._ready(item, "gender")
        years = item.attributes.age_years
        age_ok = age is not None and years is not None and math.isfinite(years)
        return SoftBiometrics(header,
                              age=min(255, max(0, int(round(years)))) if age_ok else 0,
                              age_confidence=float(age.confidence) if age_ok else 0.0,
                              gender=GENDER_CODES.get(gender.label, GENDER_UNDEFINED) if gender else GENDER_UNDEFINED,
                              gender_confidence=float(gender.confidence) if gender else 0.0)

    def expression(self, header: Header, item: TrackResult) -> Expression | None:
        emotion = self._ready(item, "emotion")
        if emotion is None or emotion.label not in EMOTION_TO_EXPRESSION:
            return None
        return Expression(header, EMOTION_TO_EXPRESSION[emotion.label], math.nan, math.nan, float(emotion.confidence))
