# The README's two commands (make demo, make test) plus build and bench helpers. Each target
# runs the setup first, so it works alone on a fresh machine.
BUILD ?= build
JOBS ?= $(shell nproc)
export CCACHE_MAXSIZE ?= 5G

.PHONY: setup build test demo bench bench-parallel bench-checkpoint bench-data clean

setup:
	@bash tools/setup.sh

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: setup $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 2

demo: build
	@bash tools/demo.sh $(BUILD)

bench: build
	.venv/bin/python tools/bench/bench.py --build $(BUILD)

bench-parallel: build
	.venv/bin/python tools/bench/parallel_bench.py --build $(BUILD)

bench-checkpoint: build
	.venv/bin/python tools/bench/checkpoint_bench.py --build $(BUILD) --out $(BUILD)/checkpoint_bench.json

bench-data: build
	.venv/bin/python tools/bench/data_bench.py --build $(BUILD)

clean:
	rm -rf $(BUILD)
