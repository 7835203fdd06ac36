# The two commands of the README, and a few conveniences.
.PHONY: demo test build bench clean format

demo:            ## install, build and run the demo on embedded SQLite
	scripts/demo.sh

test:            ## install, start test servers, run the whole suite (3 builds)
	scripts/test.sh

build:
	cmake -S . -B build/dev -DDBPOOL_WERROR=ON >/dev/null && cmake --build build/dev -j$$(nproc)

bench:           ## the benchmark suite and its report (bench/report/)
	bench/run.sh

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf build out
