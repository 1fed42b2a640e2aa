# The two commands a new user needs: `make run` (the embedded default) and `make test`.
# Both run the idempotent set-up first. Set CARGO_TARGET_DIR to share a build cache.
CARGO ?= cargo

.PHONY: setup build run check test bench

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

run: build
	$(CARGO) run --release --locked -- run --config config/default.yaml

check: build
	$(CARGO) run --release --locked -- check --config config/default.yaml

test: setup
	$(CARGO) test --release --locked

bench: build
	python3 scripts/bench.py
