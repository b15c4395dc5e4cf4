// The CPU-bound paths of a cold COPY, in process, for timing and for callgrind's instruction
// counts (scripts/bench/build runs them under `valgrind --tool=callgrind`: counts do not move
// with a noisy disk or a busy neighbour, so two trees can be compared on one machine):
//   rbuild-bench layerhash DIR     packs DIR as a build step's layer is packed where the
//                                  snapshotter keeps the tree (hashed, not stored); prints
//                                  seconds, the diffID and the tar's size
//   rbuild-bench contexthash DIR   digests DIR as a COPY's cache key does (no index: every file
//                                  read); prints seconds and the digest
//   rbuild-bench contexthash DIR INDEX
//                                  the same with the cache index file INDEX (made if missing):
//                                  a first pass remembers every file, the timed second pass is
//                                  what a warm rebuild pays (no file read)
import Foundation
import RBuildOCI
import RBuildSolver

func storageBench(_ args: [String]) -> Int32? {
    guard args.count == 3 || (args.count == 4 && args[1] == "contexthash"), ["layerhash", "contexthash"].contains(args[1]) else { return nil }
    let dir = args[2]
    do {
        let t0 = now()
        switch args[1] {
        case "layerhash":
            let state = "/tmp/rbuild-bench-layerhash-\(getpid())"
            defer { _ = try? FileManager.default.removeItem(atPath: state) }
            var options = LayerOptions(compression: .none, sourceDateEpoch: 0)
            options.storesBlob = false
            let r = try writeLayer(fromDirectory: dir, store: try ContentStore(root: state), options: options)
            print("\(now() - t0) \(r.diffID) \(r.uncompressedSize)")
        default:
            guard args.count == 4 else {
                let d = try ContextHasher(root: dir, index: nil).digest(of: "")
                print("\(now() - t0) \(d)")
                break
            }
            let index = try CacheIndex(path: args[3])
            let first = ContextHasher(root: dir, index: index)
            _ = try first.digest(of: "")
            first.save()
            let t2 = now()
            let rows = try index.fileDigests(under: dir)
            print("fileDigests: \(now() - t2) \(rows.count)")
            let t1 = now()
            let warm = ContextHasher(root: dir, index: index)
            let d = try warm.digest(of: "")
            print("\(now() - t1) \(d) files read: \(warm.filesRead)")
        }
        return 0
    } catch {
        print("rbuild-bench: \(error)")
        return 1
    }
}
