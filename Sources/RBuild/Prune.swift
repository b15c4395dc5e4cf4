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
    /// Cache-mount directories removed (with `all` or `cacheMounts`), and their bytes.
    public var cacheMounts = 0
    public var cacheMountBytes: Int64 = 0
}

/// What prune removes.
public enum PruneScope: Sendable {
    /// Blobs no image or cached step uses, and leftovers of killed builds.
    case unused
    /// And the build cache, every snapshot, every cache mount and the repositories git sources
    /// were fetched into (`--all`).
    case all
    /// Only the directories of RUN --mount=type=cache (`--filter type=exec.cachemount`).
    case cacheMounts
}

extension ImageStore {
    /// The state dir's garbage collection, as `rbuild prune` runs it: blobs that no named image
    /// and (unless `all`) no cached build step uses, the leftovers of builds killed an hour ago or
    /// more; with `all` the build cache and every unpacked snapshot too (not while a build runs);
    /// with `verify`, corrupt blobs first (`check(repair: true)`).
    public func prune(_ scope: PruneScope, verify: Bool = false) throws -> PruneResult {
        let mounts = CacheMounts(root: layout.cacheMounts, tasks: SandboxTasks())
        if scope == .cacheMounts {
            let (n, bytes) = try mounts.removeAll()
            return PruneResult(check: nil, blobs: 0, bytes: 0, sweptDirectories: 0, cacheMounts: n, cacheMountBytes: bytes)
        }
        var result = try prune(all: scope == .all, verify: verify)
        if scope == .all {
            (result.cacheMounts, result.cacheMountBytes) = try mounts.removeAll()
            if FileManager.default.fileExists(atPath: layout.git) {
                try removeTree(atPath: layout.git)
                result.sweptDirectories += 1
            }
        }
        return result
    }

    public func prune(all: Bool = false, verify: Bool = false) throws -> PruneResult {
        let check = verify ? try self.check(repair: true) : nil
        let cache = try CacheIndex(path: layout.cacheIndex)
        if all { try cache.clearSteps() }
        let (n, bytes) = try pruneBlobs(keeping: all ? [] : try cache.layerDigests())
        let swept = removeLeftovers(stateDirectory: root, olderThan: all ? 0 : 3600, snapshots: all, tasks: SandboxTasks())
        return PruneResult(check: check, blobs: n, bytes: bytes, sweptDirectories: swept)
    }
}

/// What the state dir holds, by kind (`rbuild du`).
public struct DiskUsage: Sendable {
    public struct Item: Sendable {
        /// `exec.cachemount`, `snapshots`, `source.git`, `blobs`.
        public var kind: String
        /// The cache mount's id, the snapshotter's kind; empty for blobs.
        public var name: String
        public var bytes: Int64
        /// Whether `prune` without `--all` leaves it.
        public var kept: Bool
    }
    public var items: [Item]
}

extension ImageStore {
    public func diskUsage() throws -> DiskUsage {
        var items: [DiskUsage.Item] = []
        for m in CacheMounts(root: layout.cacheMounts, tasks: SandboxTasks()).list() {
            items.append(.init(kind: "exec.cachemount", name: m.id, bytes: m.bytes, kept: true))
        }
        for kind in SnapshotterKind.allCases {
            let dir = layout.snapshots(kind: kind.rawValue)
            guard FileManager.default.fileExists(atPath: dir) else { continue }
            items.append(.init(kind: "snapshots", name: kind.rawValue, bytes: RBuildSystem.diskUsage(dir), kept: true))
        }
        if FileManager.default.fileExists(atPath: layout.git) {
            items.append(.init(kind: "source.git", name: "", bytes: RBuildSystem.diskUsage(layout.git), kept: true))
        }
        items.append(.init(kind: "blobs", name: "", bytes: RBuildSystem.diskUsage(layout.blobs), kept: true))
        return DiskUsage(items: items)
    }
}
