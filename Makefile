# The two commands a new user needs: `make run` (the embedded default) and `make test`.
# Both run the idempotent set-up first. Set CARGO_TARGET_DIR to share a build cache.
CARGO ?= cargo

.PHONY: setup build run demo-gallery check test bench bench-live parity

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

bench: build
	python3 scripts/bench.py

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
