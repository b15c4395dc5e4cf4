// Measures the embedding API's cost of one sandboxed process, without process start-up:
// `rbuild-bench spawn ROOTFS N` runs /bin/true N times through Sandbox.run in this process and
// prints the seconds taken. Used by scripts/bench/spawn.
import RBuild
#if canImport(Glibc)
import Glibc
#endif

let args = CommandLine.arguments
guard args.count == 4, args[1] == "spawn", let n = Int(args[3]) else {
    print("usage: rbuild-bench spawn ROOTFS N")
    exit(2)
}
var spec = SandboxSpec(rootfs: args[2], argv: ["/bin/true"])
var start = timespec(), end = timespec()
clock_gettime(CLOCK_MONOTONIC, &start)
for _ in 0..<n {
    do {
        let status = try Sandbox.run(spec)
        if status != 0 { print("rbuild-bench: /bin/true exited \(status)"); exit(1) }
    } catch {
        print("rbuild-bench: \(error)")
        exit(1)
    }
}
clock_gettime(CLOCK_MONOTONIC, &end)
print(Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9)
