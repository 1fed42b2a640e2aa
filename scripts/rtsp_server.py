#!/usr/bin/python3
"""A real RTSP server for vigil's tests and benchmarks: Debian's GStreamer RTSP server.

Serves H.264 from MP4 files without re-encoding, paced in real time by GStreamer's clock, each
mount shared by its clients the way a camera is:

    /usr/bin/python3 scripts/rtsp_server.py --port 8554 --mount cam1=build/media/live_720p.mp4

It prints `ready rtsp://127.0.0.1:PORT` on stdout once it listens, and serves until killed.
Run it with Debian's /usr/bin/python3, which sees python3-gi (package list in scripts/setup.sh).
`--user NAME:PASSWORD` requires Basic authentication, to test credentials in URLs.
"""

import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument(
        "--mount",
        action="append",
        required=True,
        metavar="NAME=FILE",
        help="serve FILE (MP4 with H.264) at rtsp://ADDRESS:PORT/NAME",
    )
    ap.add_argument("--user", metavar="NAME:PASSWORD", help="require Basic authentication")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for m in args.mount:
        name, _, path = m.partition("=")
        if not name or not path:
            print(f"--mount {m!r}: expected NAME=FILE", file=sys.stderr)
            return 2
        if not os.path.isfile(path):
            print(f"--mount {m!r}: {path} is not a file", file=sys.stderr)
            return 2
        factory = GstRtspServer.RTSPMediaFactory()
        loc = path.replace("\\", "\\\\").replace('"', '\\"')
        factory.set_launch(
            f'( filesrc location="{loc}" ! qtdemux ! h264parse config-interval=-1 '
            "! rtph264pay name=pay0 pt=96 )"
        )
        factory.set_shared(True)
        if args.user:
            factory.add_role_from_structure(
                Gst.Structure.from_string(
                    "user, media.factory.access=(boolean)true, "
                    "media.factory.construct=(boolean)true"
                )[0]
            )
        mounts.add_factory("/" + name, factory)

    if args.user:
        user, _, password = args.user.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        basic = GstRtspServer.RTSPAuth.make_basic(user, password)
        auth.add_basic(basic, token)
        server.set_auth(auth)

    if server.attach(None) == 0:
        print(f"cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1
    print(f"ready rtsp://{args.address}:{args.port}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
