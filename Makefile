# The README's two commands: `make demo` (the main job) and `make test`.
# Both install what is missing first (.ci/bootstrap), and rebuild the C parts when they change.
PY ?= python3
NATIVE := $(wildcard native/src/*.c native/src/*.h native/include/mirrord/*.h) native/build_native.py

.PHONY: demo test install bench
install: build/.bootstrapped

build/.bootstrapped: .ci/bootstrap pyproject.toml setup.py $(NATIVE)
	PY=$(PY) bash .ci/bootstrap

# The built-in lab: three namespaces, the AF_XDP forwarder, the daemon, a burst of traffic.
demo: install
	$(PY) -m mirrord demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) bench/ring.py
