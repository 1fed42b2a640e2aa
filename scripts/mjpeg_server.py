#!/usr/bin/env python3
"""An MJPEG-over-HTTP camera for vigil's tests: serves JPEG files as one endless
`multipart/x-mixed-replace` stream, the way most IP cameras' `video.mjpg` does.

    python3 scripts/mjpeg_server.py --port 8080 --fps 10 frames/*.jpg

It prints `ready http://127.0.0.1:PORT/video.mjpg` once it listens. Standard library only.
"""

import argparse
import http.server
import sys
import time

BOUNDARY = "vigilframe"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("frames", nargs="+", help="JPEG files, served in order, looped")
    args = ap.parse_args()
    frames = []
    for path in args.frames:
        with open(path, "rb") as f:
            frames.append(f.read())

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/video.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            period = 1.0 / args.fps
            due = time.monotonic()
            i = 0
            try:
                while True:
                    jpg = frames[i % len(frames)]
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpg)}\r\n\r\n".encode()
                    )
                    self.wfile.write(jpg)
                    self.wfile.write(b"\r\n")
                    self.wfile.flush()
                    i += 1
                    due += period
                    time.sleep(max(0.0, due - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Camera)
    server.daemon_threads = True
    print(f"ready http://127.0.0.1:{args.port}/video.mjpg", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
