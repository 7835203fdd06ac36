# The two commands of the README, and a few conveniences.
.PHONY: demo test build bench soak clean format

demo:            ## install, build and run the demo on embedded SQLite
	scripts/demo.sh

test:            ## install, start test servers, run the whole suite (3 builds)
	scripts/test.sh

build:
	cmake -S . -B build/dev -DDBPOOL_WERROR=ON >/dev/null && cmake --build build/dev -j$$(nproc)

bench:           ## the benchmark suite and its report (bench/report/)
	bench/run.sh

soak:            ## the endurance run: 10 minutes per backend, own servers (docs/testing.md)
	scripts/soak.sh

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf build out
