import Foundation
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// What `prune` removed.
public struct PruneResult: Sendable {
    /// With `verify`: the store check that ran first (its corrupt blobs removed).
    public var check: StoreCheck?
    public var blobs: Int
    public var bytes: Int64
    /// Directories of killed builds (an hour old or more) and, with `all`, unpacked snapshots.
    public var sweptDirectories: Int
}

extension ImageStore {
    /// The state dir's garbage collection, as `rbuild prune` runs it: blobs that no named image
    /// and (unless `all`) no cached build step uses, the leftovers of builds killed an hour ago or
    /// more; with `all` the build cache and every unpacked snapshot too (not while a build runs);
    /// with `verify`, corrupt blobs first (`check(repair: true)`).
    public func prune(all: Bool = false, verify: Bool = false) throws -> PruneResult {
        let check = verify ? try self.check(repair: true) : nil
        let cache = try CacheIndex(path: layout.cacheIndex)
        if all { try cache.clearSteps() }
        let (n, bytes) = try pruneBlobs(keeping: all ? [] : try cache.layerDigests())
        let swept = removeLeftovers(stateDirectory: root, olderThan: all ? 0 : 3600, snapshots: all, tasks: SandboxTasks())
        return PruneResult(check: check, blobs: n, bytes: bytes, sweptDirectories: swept)
    }
}
