// In-process measurements for scripts/bench:
//   rbuild-bench spawn ROOTFS N [NETWORK]  runs /bin/true N times through Sandbox.run (on the
//                                 host's network, or NETWORK: none, default); prints seconds
//   rbuild-bench parse FILE N     parses, types and lints FILE N times; prints the best seconds
//   rbuild-bench layer DIR gzip|zstd|none LEVEL   packs DIR into a layer; prints seconds and sizes
//   rbuild-bench snapshot TAR KIND STATE  applies the layer TAR with snapshotter KIND, then diffs the
//                                 result back into an uncompressed layer; prints both times
//   rbuild-bench layerhash DIR / contexthash DIR   see Storage.swift
import Foundation
import RBuild
import RBuildDockerfile
import RBuildOCI
import RBuildSnapshots
#if canImport(Glibc)
import Glibc
#endif

let args = CommandLine.arguments
func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}
if let status = storageBench(args) { exit(status) }
if args.count == 4, args[1] == "parse", let n = Int(args[3]) {
    guard let fd = fopen(args[2], "r") else { print("rbuild-bench: cannot open \(args[2])"); exit(1) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let got = fread(&buf, 1, buf.count, fd)
        if got <= 0 { break }
        bytes += buf[0..<got]
    }
    fclose(fd)
    let text = String(decoding: bytes, as: UTF8.self)
    let context = ExpansionContext(buildPlatform: Platform(architecture: "amd64"))
    var best = Double.infinity, bestParse = Double.infinity
    var warnings = 0
    for _ in 0..<n {
        let t0 = now()
        do {
            let df = try Dockerfile.parse(text)
            let t1 = now()
            warnings = try Linter.check(df, context: context).count
            bestParse = min(bestParse, t1 - t0)
        } catch {
            print("rbuild-bench: \(error)")
            exit(1)
        }
        best = min(best, now() - t0)
    }
    print("\(best) \(warnings) \(bestParse)")
    exit(0)
}
if args.count == 5, args[1] == "layer", let compression = Compression(rawValue: args[3]), let level = Int(args[4]) {
    let state = "/tmp/rbuild-bench-layer-store-\(getpid())"
    defer { _ = try? FileManager.default.removeItem(atPath: state) }
    do {
        let store = try ContentStore(root: state)
        let t0 = now()
        let r = try writeLayer(fromDirectory: args[2], store: store, options: LayerOptions(compression: compression, level: level, sourceDateEpoch: 0))
        print("\(now() - t0) \(r.descriptor.size) \(r.uncompressedSize)")
    } catch {
        print("rbuild-bench: \(error)")
        exit(1)
    }
    exit(0)
}
if args.count == 5, args[1] == "snapshot", let kind = SnapshotterKind(rawValue: args[3]) {
    do {
        let store = try ContentStore(root: args[4])
        let fd = open(args[2], O_RDONLY)
        let (diffID, _) = try store.ingest(fd: fd)
        close(fd)
        let s = try Snapshotters.make(kind, stateDirectory: args[4], tasks: SandboxTasks())
        let t0 = now()
        let snap = try s.apply(layer: StoredBlob(path: args[2]), diffID: diffID, name: "bench", on: Snapshot(chainID: nil, directories: []))
        let t1 = now()
        let r = try writeLayer(fromDirectory: snap.directories.last!, store: store,
                               options: LayerOptions(compression: .none, sourceDateEpoch: 0))
        let t2 = now()
        print("\(t1 - t0) \(t2 - t1) \(r.uncompressedSize)")
    } catch {
        print("rbuild-bench: \(error)")
        exit(1)
    }
    exit(0)
}
guard args.count == 4 || args.count == 5, args[1] == "spawn", let n = Int(args[3]),
      let network = NetworkMode(rawValue: args.count == 5 ? args[4] : "host") else {
    print("usage: rbuild-bench spawn ROOTFS N [host|none|default] | rbuild-bench parse FILE N")
    exit(2)
}
var spec = SandboxSpec(rootfs: args[2], argv: ["/bin/true"])
spec.network = network
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
