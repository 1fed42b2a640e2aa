# The two commands a new user needs: `make run` (the embedded default) and `make test`.
# Both run the idempotent set-up first. Set CARGO_TARGET_DIR to share a build cache.
CARGO ?= cargo

.PHONY: setup build run demo-gallery check test bench bench-live bench-store parity int8

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

run: build demo-gallery
	$(CARGO) run --release --locked -- run --config config/default.yaml

# The default config's gallery: Barack Obama, enrolled from one registry photo.
demo-gallery: build
	test -s build/demo-gallery.json || $(CARGO) run --release --locked -- gallery enroll \
		--config config/default.yaml --name "Barack Obama" build/media/faces/obama.jpg

check: build demo-gallery
	$(CARGO) run --release --locked -- check --config config/default.yaml

test: setup
	$(CARGO) test --release --locked

# Every benchmark in one run (docs/benchmarks.md): decode 720p/1080p vs ffmpeg, classifier vs
# Python onnxruntime, faces vs the face_recognition-style baseline, pipeline vs its slowest stage,
# int8 vs fp32 (after `make int8`), the gallery at 10k/100k/1M, 1-8 live cameras; then the shared
# gallery at 1M in PostgreSQL (bench-store, into docs/scaling.md). bench.py alone took 42 min
# on 2 cores, 7 of them building the 1M gallery's index (later runs reuse it); the start-up row
# needs the demo gallery. `python3 scripts/bench.py --quick` is shorter and `--soak-minutes 60`
# adds the memory soak.
bench: build demo-gallery
	python3 scripts/bench.py
	python3 scripts/bench_store.py --out docs/scaling.md

# Opt-in int8 I3D (not the default: it changes 2 or 3 of 46 labels on the real clips).
INT8_VENV = $${VIGIL_CACHE:-$$HOME/.cache/vigil}/int8-venv
int8: setup
	test -x $(INT8_VENV)/bin/python || python3 -m venv $(INT8_VENV)
	$(INT8_VENV)/bin/pip install -q -r models/requirements-int8.txt
	$(INT8_VENV)/bin/python models/quantize_i3d.py --model build/models/i3d_kinetics400.onnx \
		--out build/models/i3d_kinetics400_int8.onnx --calib-video build/media/bigbuckbunny.mp4
	$(INT8_VENV)/bin/python scripts/compare_int8.py --runs 3

# The shared gallery (docs/scaling.md): 1M embeddings in PostgreSQL 15, a fresh node's cold
# start (sync and HNSW build), the catch-up of 1000 changes and of one (in place); `python3
# scripts/bench_store.py --people 100000` is a few minutes.
bench-store: build
	python3 scripts/bench_store.py

# 1, 2, 4 and 8 RTSP cameras with both branches on: fps, drops, latency, CPU, memory (~5 min).
bench-live: build
	python3 scripts/bench_live.py

# Opt-in: every converted model against its original (installs JAX, Flax and dlib; about 1 GB).
PARITY_VENV = $${VIGIL_CACHE:-$$HOME/.cache/vigil}/parity-venv
parity: setup
	python3 -m venv $(PARITY_VENV)
	$(PARITY_VENV)/bin/pip install -q -r models/requirements-parity.txt -r scripts/requirements-face-baseline.txt
	$(PARITY_VENV)/bin/python models/check_i3d_parity.py --cache $${VIGIL_CACHE:-$$HOME/.cache/vigil}/downloads --out build
	$(PARITY_VENV)/bin/python models/check_dlib_resnet.py --cache $${VIGIL_CACHE:-$$HOME/.cache/vigil}/downloads --out build
	$(PARITY_VENV)/bin/python models/check_mtcnn.py --parity --models build/models build/media/faces/obama.jpg
