"""Tiled detection with real MediaPipe on large frames built from real face chips (runtime/tiles.py)."""
from __future__ import annotations

import cv2
import pytest
from skimage import data

import run_camera
from helpers_faces import SAMPLES, clip_frame_rgb, face_patches, render
from runtime import tiles
from runtime.config import ConfigError, load_config
from runtime.detector import FaceDetector

WIDTH, HEIGHT = 1920, 1080
# 2×2 tiles of a 1920×1080 frame: x [0, 1097] and [823, 1920], y [0, 617] and [463, 1080].
CENTRE = (960, 540)  # inside all four tiles
ON_EDGE = (1097, 300)  # cut by the first column's right edge, whole in the second column
ON_ROW_EDGE = (400, 617)  # cut by the first row's bottom edge


@pytest.fixture(scope="module")
def big_scene():
    """Three real faces of ~100 px on a real 1920×1080 background without faces (skimage's coffee)."""
    patches = face_patches(160)
    return render(patches, [CENTRE, ON_EDGE, ON_ROW_EDGE], cv2.resize(data.coffee(), (WIDTH, HEIGHT)))


def boxes_at(detections, center):
    return [d for d in detections if d.box[0] <= center[0] <= d.box[2] and d.box[1] <= center[1] <= d.box[3]]


def test_tile_grid_covers_the_frame_with_overlap():
    grid = tiles.tile_boxes(WIDTH, HEIGHT, 2, 2)
    assert grid == [(0, 0, 1097, 617), (823, 0, 1920, 617), (0, 463, 1097, 1080), (823, 463, 1920, 1080)]
    three = tiles.tile_boxes(640, 480, 3, 2)
    assert len(three) == 6 and three[-1][2:] == (640, 480)
    assert all(x2 - x1 > 0 and y2 - y1 > 0 for x1, y1, x2, y2 in three)


def test_tiles_find_the_small_faces_the_whole_frame_misses(big_scene):
    found = {}
    for grid in ("off", "2x2"):
        with FaceDetector(running_mode="image", tiles=grid) as detector:
            found[grid] = detector.detect(big_scene)
    assert len(found["2x2"]) == 3 > len(found["off"])  # ~100 px faces are ~10 px at the model's 192-px input
    for center in (CENTRE, ON_EDGE, ON_ROW_EDGE):
        assert len(boxes_at(found["2x2"], center)) == 1


def test_a_face_seen_by_several_tiles_is_kept_once(big_scene):
    """The centre face lies whole in all four tiles; the edge faces are cut by one tile and whole in another."""
    with FaceDetector(running_mode="image") as plain:
        per_tile = [plain.detect(big_scene[y1:y2, x1:x2]) for x1, y1, x2, y2 in tiles.tile_boxes(WIDTH, HEIGHT, 2, 2)]
    assert sum(len(found) for found in per_tile) >= 5  # without the merge the faces would come several times
    with FaceDetector(running_mode="video", tiles="2x2") as detector:
        for t in (0.0, 0.04):  # VIDEO mode for the whole frame, IMAGE mode for the tiles
            merged = detector.detect(big_scene, t)
            assert len(merged) == 3
    for detection in merged:
        x1, y1, x2, y2 = detection.box
        assert 80 < x2 - x1 < 130 and 80 < y2 - y1 < 130
        inside = (detection.keypoints[:4, 0] > x1) & (detection.keypoints[:4, 0] < x2)
        assert inside.all(), "keypoints come with their box, in frame pixels"


def test_small_frames_are_unchanged_by_tiles_off():
    frame = clip_frame_rgb(SAMPLES / "head-pose-face-detection-female-and-male.mp4", 0)
    with FaceDetector(running_mode="image") as plain, FaceDetector(running_mode="image", tiles="off") as off:
        assert [d.box for d in plain.detect(frame)] == [d.box for d in off.detect(frame)]


def test_auto_grid_rule():
    assert tiles.auto_grid(480, 270, pass_ms=6.5) == (1, 1)
    assert tiles.auto_grid(640, 480, pass_ms=6.5) == (1, 1)
    assert tiles.auto_grid(1280, 720, pass_ms=6.5) == (2, 2)
    assert tiles.auto_grid(1920, 1080, pass_ms=6.5) == (2, 2)  # 3×3 would take 65 ms > 50 ms
    assert tiles.auto_grid(1920, 1080, pass_ms=2.0) == (3, 3)  # a faster CPU affords it
    assert tiles.auto_grid(1920, 1080, pass_ms=6.5, budget_ms=20) == (1, 1)


def test_auto_times_real_passes_then_tiles_only_large_frames(big_scene):
    small = clip_frame_rgb(SAMPLES / "head-pose-face-detection-female-and-male.mp4", 0)
    with FaceDetector(running_mode="video", tiles="auto", tile_budget_ms=1000.0) as detector:
        for i in range(tiles.PROBE_FRAMES):
            assert detector.grid is None or i == 0
            detector.detect(small, i / 12)
        assert detector.grid == (1, 1)
        counts = [len(detector.detect(big_scene, 1 + i / 12)) for i in range(tiles.PROBE_FRAMES + 1)]
        assert detector.grid == (3, 3)  # a new frame size is timed again; a generous budget allows 3×3
        assert counts[0] == 0 and counts[-1] == 3  # untiled while timing, tiled after
    with FaceDetector(running_mode="image", tiles="auto", tile_budget_ms=1.0) as detector:
        for _ in range(tiles.PROBE_FRAMES):
            detector.detect(big_scene)
        assert detector.grid == (1, 1)  # no pass fits in 1 ms: auto stays untiled


@pytest.mark.parametrize("text, parsed", [("off", (1, 1)), ("auto", "auto"), ("2x2", (2, 2)), ("3X2", (3, 2)),
                                          (" 3x3 ", (3, 3))])
def test_parse_tiles(text, parsed):
    assert tiles.parse_tiles(text) == parsed


@pytest.mark.parametrize("text", ["on", "2", "0x2", "2x", "10x10", "2*2", ""])
def test_bad_tiles_values_are_refused(text):
    with pytest.raises(ValueError, match="tiles"):
        tiles.parse_tiles(text)


def test_tiles_in_config_files_and_overrides(tmp_path):
    profile = tmp_path / "tiles.yaml"
    profile.write_text("detector:\n  tiles: off\n")  # YAML 1.1 reads an unquoted off as false
    assert load_config(profile).detector.tiles == "off"
    assert load_config(overrides=["detector.tiles=2x2"]).detector.tiles == "2x2"
    with pytest.raises(ConfigError, match=r"--set: detector.tiles must be off, auto or COLSxROWS.*'4by4'"):
        load_config(overrides=["detector.tiles=4by4"])
    with pytest.raises(ConfigError, match="detector.tile_budget_ms must be > 0"):
        load_config(overrides=["detector.tile_budget_ms=0"])


def test_bad_tiles_exit_2_naming_the_key(capsys):
    status = run_camera.main(["--source", str(SAMPLES / "classroom.mp4"), "--headless", "--set", "detector.tiles=on"])
    assert status == 2
    assert "detector.tiles must be off, auto or COLSxROWS" in capsys.readouterr().err


def test_tile_threads_find_the_same_faces(big_scene):
    with FaceDetector(running_mode="video", tiles="2x2") as alone, \
            FaceDetector(running_mode="video", tiles="2x2", tile_threads=2) as threaded:
        for t in (0.0, 0.04, 0.08):
            assert [d.box for d in threaded.detect(big_scene, t)] == [d.box for d in alone.detect(big_scene, t)]
    with pytest.raises(ValueError, match="tile_threads"):
        FaceDetector(tile_threads=-1)


def test_a_tiled_run_tracks_the_small_seated_faces(tmp_path):
    """End to end: classroom.mp4's four seated people (~15 px faces at 480x270) are tracked only with tiles."""
    import json

    confirmed = {}
    for grid in ("off", "2x2"):
        jsonl = tmp_path / f"{grid}.jsonl"
        status = run_camera.main(["--source", str(SAMPLES / "classroom.mp4"), "--headless", "--mode", "fast",
                                  "--jsonl", str(jsonl), "--set", f"detector.tiles={grid}"])
        assert status == 0
        frames = [r for r in map(json.loads, jsonl.read_text().splitlines()) if r["type"] == "frame"]
        confirmed[grid] = max(sum(t["state"] == "confirmed" for t in f["tracks"]) for f in frames)
    assert confirmed["off"] <= 1 and confirmed["2x2"] >= 3


def test_video_mode_keeps_no_state_so_tiles_may_use_image_mode():
    """The reason tiles run on an IMAGE-mode instance: VIDEO mode gives the same faces frame by frame."""
    clip = SAMPLES / "face-demographics-walking-and-pause.mp4"
    frames = [clip_frame_rgb(clip, i) for i in (0, 10, 20, 30)]
    frames += frames[::-1]
    with FaceDetector(running_mode="video") as video, FaceDetector(running_mode="image") as image:
        assert [[d.box for d in video.detect(f, i / 12)] for i, f in enumerate(frames)] == \
            [[d.box for d in image.detect(f)] for f in frames]
