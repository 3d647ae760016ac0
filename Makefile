# The README's two commands: `make demo` (the main job) and `make test`.
# Both install what is missing first (.ci/bootstrap), and rebuild the C parts when they change.
PY ?= python3
NATIVE := $(wildcard native/src/*.c native/src/*.h native/include/mirrord/*.h) native/build_ring.py native/build_xdp.py

.PHONY: demo test test-installed install bench lib install-lib
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
		--exclude=__pycache__ --exclude=.hypothesis --exclude=./native/rust/mirrord-tap/target -cf - . | tar -xf - -C build/src
	$(PY) -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation ./build/src -w build/wheel
	$(PY) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install -q --disable-pip-version-check --root-user-action=ignore \
		"$$(ls build/wheel/mirrord-*.whl)[test]"
	mkdir -p build/cwd
	cd build/cwd && MIRRORD_EXPECT_INSTALLED=1 ../venv-wheel/bin/pytest -p no:cacheprovider \
		$(addprefix $(CURDIR)/,$(INSTALLED_TESTS))

bench: install
	$(PY) bench/ring.py

# libmirrord: the embeddable tap (and the registration helper, client.c, once it exists) as
# a shared library with a soname and a version script, a static archive and a pkg-config
# file, for forwarders that are not `mirrord forward` (docs/embedding.md).  The Python
# package does not use it: its cffi modules compile the sources they need.
CC ?= cc
PREFIX ?= /usr/local
LIB := build/lib
LIB_SRC := native/src/tap.c native/src/ring.c native/src/guard.c $(wildcard native/src/client.c)
LIB_HDR := native/include/mirrord/tap.h native/include/mirrord/ring.h $(wildcard native/include/mirrord/client.h)
LIB_OBJ := $(patsubst native/src/%.c,$(LIB)/obj/%.o,$(LIB_SRC))
LIB_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter -fPIC -fvisibility=hidden \
	-DMR_BUILD_LIB -Inative/include
LIB_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

lib: $(LIB)/libmirrord.so.0 $(LIB)/libmirrord.so $(LIB)/libmirrord.a $(LIB)/mirrord.pc

$(LIB)/obj/%.o: native/src/%.c $(wildcard native/src/*.h native/include/mirrord/*.h) Makefile
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

# the version script as linked: without the mr_client__ names while client.c is absent
$(LIB)/libmirrord.map: native/libmirrord.map $(LIB_SRC)
	@mkdir -p $(@D)
	$(if $(wildcard native/src/client.c),cp $< $@,grep -v 'mr_client__' $< > $@)

$(LIB)/libmirrord.so.0: $(LIB_OBJ) $(LIB)/libmirrord.map
	$(CC) -shared -Wl,-soname,libmirrord.so.0 -Wl,--version-script=$(LIB)/libmirrord.map \
		-Wl,--no-undefined -Wl,-z,relro,-z,now -o $@ $(LIB_OBJ) -lpcap -lpthread

$(LIB)/libmirrord.so: $(LIB)/libmirrord.so.0
	ln -sf libmirrord.so.0 $@

$(LIB)/libmirrord.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $(LIB_OBJ)

# the prefix is the one given to make (install-lib rewrites it for its PREFIX)
$(LIB)/mirrord.pc: native/mirrord.pc.in pyproject.toml Makefile
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(LIB_VERSION)|' $< > $@

install-lib: lib
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/mirrord
	install -m 0755 $(LIB)/libmirrord.so.0 $(DESTDIR)$(PREFIX)/lib/libmirrord.so.0
	ln -sf libmirrord.so.0 $(DESTDIR)$(PREFIX)/lib/libmirrord.so
	install -m 0644 $(LIB)/libmirrord.a $(DESTDIR)$(PREFIX)/lib/libmirrord.a
	install -m 0644 $(LIB_HDR) $(DESTDIR)$(PREFIX)/include/mirrord/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(LIB_VERSION)|' native/mirrord.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/mirrord.pc
