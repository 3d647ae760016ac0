# The README's two commands: `make demo` (the main job) and `make test`.
# Both install what is missing first (.ci/bootstrap), and rebuild the C parts when they change.
PY ?= python3
NATIVE := $(wildcard native/src/*.c native/src/*.h native/include/mirrord/*.h) native/build_ring.py native/build_xdp.py

.PHONY: demo test test-installed install bench
install: build/.bootstrapped

build/.bootstrapped: .ci/bootstrap pyproject.toml setup.py $(NATIVE)
	PY=$(PY) bash .ci/bootstrap

# The built-in lab: three namespaces, the AF_XDP forwarder, the daemon, a burst of traffic.
demo: install
	$(PY) -m mirrord demo

# The whole suite on the editable tree, then the daemon- and forwarder-level tests against
# what users install: a wheel built from the tree, in a fresh venv (not editable), run by
# that venv's own `pytest` from a directory outside the tree (`python -m pytest` from the
# root would put the tree's mirrord/ first on sys.path); tests/unit/test_installed.py
# fails if mirrord was imported from anywhere but that venv's site-packages.
INSTALLED_TESTS := tests/unit/test_installed.py tests/unit/test_cli_help.py \
	tests/linux/test_daemon.py tests/linux/test_forward.py tests/linux/test_operations.py \
	tests/linux/test_sinks.py tests/linux/test_demo.py
WHEEL_VENV := build/venv-wheel

test: install
	$(PY) -m pytest
	$(MAKE) test-installed

test-installed: install
	rm -rf build/wheel build/src $(WHEEL_VENV)
	@# from a copy as clean as a fresh clone: a stale *.egg-info or build/lib in the tree
	@# would slip files into the wheel that the packaging itself leaves out
	mkdir -p build/src
	tar --exclude=./build --exclude=./.venv --exclude=./.git --exclude='*.egg-info' --exclude='*.so' \
		--exclude=__pycache__ --exclude=.hypothesis -cf - . | tar -xf - -C build/src
	$(PY) -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation ./build/src -w build/wheel
	$(PY) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install -q --disable-pip-version-check --root-user-action=ignore \
		"$$(ls build/wheel/mirrord-*.whl)[test]"
	mkdir -p build/cwd
	cd build/cwd && MIRRORD_EXPECT_INSTALLED=1 ../venv-wheel/bin/pytest -p no:cacheprovider \
		$(addprefix $(CURDIR)/,$(INSTALLED_TESTS))

bench: install
	$(PY) bench/ring.py
