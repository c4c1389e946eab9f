# The README's two commands: `make run` and `make test`. Everything else is CMake.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

FUZZ_SECONDS ?= 60

.PHONY: all deps test-deps configure build run test test-asan fuzz bench package clean

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

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer (but the container,
# SDK and installed-package tests: what they install is the plain build's business). Line tables
# are all the sanitizers' reports need of the debug information (-g1), and the benchmark is not
# built: CI builds this tree after the plain one, within its 30 minutes.
test-asan: test-deps
	cmake -S . -B build-asan -G Ninja -DWARDEN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_CXX_FLAGS_DEBUG=-g1 -DWARDEN_BUILD_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS) -LE "container|package"

# The request fuzzer (libFuzzer, clang) for FUZZ_SECONDS, from the seed corpus in tests/fuzz/corpus;
# what it finds new goes to build-fuzz/corpus, a crash to build-fuzz/crash-*.
fuzz: test-deps
	cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DWARDEN_FUZZ=ON \
	  -DWARDEN_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build-fuzz --target request_fuzzer
	mkdir -p build-fuzz/corpus
	build-fuzz/bin/request_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 \
	  -artifact_prefix=build-fuzz/ -print_final_stats=1 build-fuzz/corpus tests/fuzz/corpus

# Measures a real wardend against baselines from the same run; writes BENCHMARKS.md.
bench: test-deps build
	scripts/bench > BENCHMARKS.md

# build/warden_VERSION_amd64.deb: `apt install ./build/warden_*.deb` enables warden.socket; the
# other two packages, and build/warden_client-VERSION-py3-none-any.whl for a venv.
package: build
	cd $(BUILD) && cpack -G DEB
	cmake --build $(BUILD) --target python_wheel

clean:
	rm -rf $(BUILD) build-asan build-fuzz
