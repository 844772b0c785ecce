"""An MJPEG camera served over HTTP from 127.0.0.1 (multipart/x-mixed-replace JPEG frames), the way IP
cameras and `mjpg-streamer` serve one, for fault tests: it can stream, stall (connections stay open, no
data), stop (every connection closed, port closed) and restart on the same port.

    with MjpegCamera(jpeg_frames) as camera:     # always stopped on exit
        capture = Capture(camera.url)
        camera.stall(); camera.resume(); camera.stop(); camera.start()
"""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = b"facecueframe"


def jpeg_frames(images: list[np.ndarray]) -> list[bytes]:
    return [cv2.imencode(".jpg", image)[1].tobytes() for image in images]


class MjpegCamera:
    def __init__(self, frames: list[bytes], fps: float = 20.0):
        self.frames = frames
        self.period = 1.0 / fps
        self.port: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._streaming = threading.Event()  # cleared: stalled
        self._serving = threading.Event()  # cleared: handlers end, connections close
        self.frames_sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                index = 0
                try:
                    while camera._serving.is_set():
                        if not camera._streaming.is_set():
                            time.sleep(0.02)  # stalled: the socket stays open, nothing is sent
                            continue
                        jpeg = camera.frames[index % len(camera.frames)]
                        index += 1
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        self.wfile.flush()
                        camera.frames_sent += 1
                        time.sleep(camera.period)
                except OSError:
                    pass  # the client went away

        server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._serving.set()
        self._streaming.set()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mjpeg-camera", daemon=True)
        self._thread.start()

    def stall(self) -> None:
        self._streaming.clear()

    def resume(self) -> None:
        self._streaming.set()

    def stop(self) -> None:
        """Close the port and every connection (the camera is unplugged). Idempotent."""
        self._serving.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        time.sleep(0.1)  # handlers notice `_serving` within one frame period and close their sockets

    def __enter__(self) -> MjpegCamera:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) != 0
