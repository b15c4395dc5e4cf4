# Sourced by each scripts/fuzz/NAME: builds scripts/fuzz/NAME-entry.swift into a libFuzzer
# binary and runs it. The modules are built once, by SwiftPM, with the sanitizers' instrumentation
# (-sanitize=fuzzer,address; the C targets with -fsanitize=fuzzer-no-link,address) into a scratch
# directory of their own (fuzz-out/build: the normal .build and `swift test` never see these
# flags); each entry file is then compiled and linked against those modules by swiftc. The C
# libraries come in through the system modules' `link` lines (CArchive, CZlib, CZstd, CCrypto…)
# and Package.swift's linkedLibrary settings.
# Keep each crasher, hang or leak as a regression test in the matching Tests/ target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

fuzz_out=fuzz-out
fuzz_modules=$fuzz_out/build/release

# Builds fuzz-out/bin/fuzz-NAME from scripts/fuzz/NAME-entry.swift (and support.swift).
fuzz_build() {
    local name=$1
    mkdir -p "$fuzz_out/bin"
    # RBuildDockerfile's closure holds every module a harness imports (System, OCI, Snapshots,
    # Registry…) but RBuildBake (and Yams): two incremental builds serve them all (both always,
    # since every object of the scratch build is linked into each harness).
    : >"$fuzz_out/build.log"
    local target
    for target in RBuildDockerfile RBuildBake; do
        if ! swift build -c release --target "$target" --scratch-path "$fuzz_out/build" \
                -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address \
                >>"$fuzz_out/build.log" 2>&1; then
            tail -n 40 "$fuzz_out/build.log"
            echo "fuzz/$name: building the instrumented modules failed (fuzz-out/build.log)" >&2
            exit 1
        fi
    done
    # Clang modules: the system libraries' maps in Sources, the C targets' generated ones.
    local maps=()
    for m in Sources/C*/module.modulemap; do maps+=(-I "$(dirname "$m")"); done
    for m in "$fuzz_modules"/C*.build/module.modulemap; do
        maps+=(-Xcc -fmodule-map-file="$m")
    done
    # (Every object of the scratch build is linked, packages' C targets' from subdirectories such
    # as Yams' CYaml.build/src: after a source file is removed or renamed, remove fuzz-out/build once.)
    local objects=()
    mapfile -t objects < <(find -H "$fuzz_modules" -path '*.build/*' -name '*.o' | sort)
    # The C targets' own libraries (Package.swift's linkerSettings, e.g. CRBuildCurl's curl).
    local libs=()
    for l in $(grep -o 'linkedLibrary("[^"]*")' Package.swift | cut -d'"' -f2); do libs+=(-l"$l"); done
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name "Fuzz_${name//-/_}" -use-ld=lld \
        -I "$fuzz_modules/Modules" "${maps[@]}" "${libs[@]}" \
        "scripts/fuzz/$name-entry.swift" scripts/fuzz/support.swift "${objects[@]}" \
        -o "$fuzz_out/bin/fuzz-$name"
}

# Runs fuzz-out/bin/fuzz-NAME for SECONDS over fuzz-out/NAME/corpus (new inputs are kept
# there) and fuzz-out/NAME/seeds (rewritten by each script); more libFuzzer flags may follow.
# Crashers, hangs and leaks are written to fuzz-out/NAME/ (crash-*, timeout-*, leak-*), the
# whole log to fuzz-out/NAME/log; libFuzzer's final stats are printed. As root, FUZZ_USER=USER
# runs the fuzzer as that user (a harness that writes files then cannot reach what root could).
fuzz_run() {
    local name=$1 seconds=$2
    shift 2
    local dir=$fuzz_out/$name
    mkdir -p "$dir/corpus" "$dir/seeds"
    local as=()
    if [[ -n ${FUZZ_USER:-} ]]; then
        chown -R "$FUZZ_USER" "$dir"
        as=(runuser -u "$FUZZ_USER" --)
    fi
    local status=0
    # (Swift's backtracer reads the crashed process's memory, which AddressSanitizer reports.)
    SWIFT_BACKTRACE=enable=no "${as[@]}" "$fuzz_out/bin/fuzz-$name" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$dir/" "$@" "$dir/corpus" "$dir/seeds" >"$dir/log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$dir/log" || true
    if ((status != 0)); then
        tail -n 40 "$dir/log"
        echo "fuzz/$name: FAILED (exit $status): the input is in $dir/" >&2
        exit "$status"
    fi
    echo "fuzz/$name: ran ${seconds}s without a crash, hang or leak"
}

# Empties fuzz-out/NAME/seeds and prints its path.
fuzz_seeds() {
    local dir=$fuzz_out/$1/seeds
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$dir"
}
