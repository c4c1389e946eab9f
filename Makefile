# The README's two commands: `make run` and `make test`. Everything else is CMake.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps test-deps configure build run test test-asan bench package clean

all: build

deps:
	scripts/install-deps build

test-deps:
	scripts/install-deps test

configure:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Starts wardend in the foreground with the default configuration (Ctrl-C stops it; running jobs
# are left alone).
run: deps build
	$(BUILD)/bin/wardend --config daemon/wardend.conf

test: test-deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer (but the container
# test: the package it installs is the plain build's business).
test-asan: test-deps
	cmake -S . -B build-asan -G Ninja -DWARDEN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS) -LE container

# Measures a real wardend against baselines from the same run; writes BENCHMARKS.md.
bench: test-deps build
	scripts/bench > BENCHMARKS.md

# build/warden_VERSION_amd64.deb: `apt install ./build/warden_*.deb` enables warden.socket.
package: build
	cd $(BUILD) && cpack -G DEB

clean:
	rm -rf $(BUILD) build-asan
