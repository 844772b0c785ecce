"""Make samples/walking-and-pause-demo.mp4: the bundled 3.4 s Intel clip, then its last 16 frames (three people
standing) played back and forth four times, ~14 s at the clip's 12 fps, so every person stays in view long
enough for `attributes_ready` with the default profile (policy.interval 1 s × events.min_observations).

    python scripts/make_demo_clip.py [--out samples/walking-and-pause-demo.mp4]

The source is CC BY 4.0 (samples/ATTRIBUTION.md); the result is an adaptation under the same licence. OpenCV
writes it (mp4v: the pip wheels have no H.264 encoder), so ffmpeg is not needed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(SAMPLES / "face-demographics-walking-and-pause.mp4"))
    parser.add_argument("--out", default=str(SAMPLES / "walking-and-pause-demo.mp4"))
    parser.add_argument("--hold", type=int, default=16, help="frames at the end played back and forth")
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args(argv)
    video = cv2.VideoCapture(args.source)
    fps = video.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    if not frames:
        print(f"error: cannot read {args.source}", file=sys.stderr)
        return 2
    tail = frames[-args.hold:]
    sequence = frames + (tail[::-1][1:] + tail[1:]) * args.passes
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in sequence:
        writer.write(frame)
    writer.release()
    print(f"wrote {args.out}: {len(sequence)} frames at {fps:g} fps ({len(sequence) / fps:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
