#!/usr/bin/env python3
"""Run the facecue pipeline (the design's entry point; the same as `facecue run`, see runtime/run.py).

    python run_camera.py --source samples/face-demographics-walking-and-pause.mp4 --headless
"""
import sys

from runtime.run import main

if __name__ == "__main__":
    sys.exit(main())
