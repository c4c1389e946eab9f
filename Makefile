# The README's two commands: `make run` and `make test`. Everything else is CMake.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps test-deps configure build run test test-asan bench clean

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

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan: test-deps
	cmake -S . -B build-asan -G Ninja -DWARDEN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

# Measures a real wardend against baselines from the same run; writes BENCHMARKS.md.
bench: test-deps build
	scripts/bench > BENCHMARKS.md

clean:
	rm -rf $(BUILD) build-asan
