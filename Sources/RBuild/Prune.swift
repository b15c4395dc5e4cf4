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
    /// Cached steps forgotten (`prune --filter`, `--keep-storage`), and their layers' bytes.
    public var steps = 0
    public var stepBytes: Int64 = 0
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
        let (n, bytes) = try pruneBlobs(keeping: all ? [] : try cache.layerDigests(), recipeGrace: all ? 0 : 3600)
        // Snapshots go with --all.
        let swept = all ? try removeSnapshots() : removeLeftovers(stateDirectory: root, olderThan: 3600, snapshots: false, tasks: SandboxTasks())
        return PruneResult(check: check, blobs: n, bytes: bytes, sweptDirectories: swept)
    }

    /// Removes every snapshot (and what killed builds left): the layers images still name whose
    /// only copy is a snapshot (`LayerRecipe`) become blobs first. Returns how many entries went.
    func removeSnapshots() throws -> Int {
        _ = try content.materialiseRecipes()
        return removeLeftovers(stateDirectory: root, olderThan: 0, snapshots: true, tasks: SandboxTasks())
    }
}

/// What the state dir holds (`rbuild du`): one item per cached step (`regular`, as buildx calls
/// a build's layers), per cache mount (`exec.cachemount`) and per snapshotter's unpacked layers
/// (`snapshots`), and the content store as a whole (`blobs`: images' and cached steps' layers,
/// counted again there).
public struct DiskUsage: Sendable {
    public struct Item: Sendable {
        /// `regular`, `exec.cachemount`, `snapshots`, `source.git`, `blobs`.
        public var kind: String
        /// The step's cache key, the cache mount's id, the snapshotter's kind; empty for blobs.
        public var name: String
        public var bytes: Int64
        /// Whether `prune` without `--all` or a filter leaves it.
        public var kept: Bool
        /// When a build last used it; nil when unknown (snapshots, blobs).
        public var lastUsed: Date?
        public var created: Date?
        /// The step's name, the layer's digest.
        public var description: String = ""

        public init(kind: String, name: String, bytes: Int64, kept: Bool, lastUsed: Date? = nil, created: Date? = nil,
                    description: String = "") {
            self.kind = kind
            self.name = name
            self.bytes = bytes
            self.kept = kept
            self.lastUsed = lastUsed
            self.created = created
            self.description = description
        }
    }
    public var items: [Item]

    /// The items `filter` selects.
    public func filtered(_ filter: UsageFilter, now: Date = Date()) -> [Item] {
        items.filter { filter.matches($0, now: now) }
    }
}

/// `--filter` of `rbuild du` and `rbuild prune`, in buildx's names: `until=DURATION` (not used
/// for that long: `24h`, `2h30m`, `90s`; `unused-for` too), `type=regular|exec.cachemount|snapshots`,
/// `id=PREFIX`. Values of one key are alternatives; different keys must all match (docker's
/// filter rules).
public struct UsageFilter: Sendable, Equatable {
    public var types: Set<String> = []
    public var until: TimeInterval?
    public var ids: [String] = []

    public static let kinds = ["regular", "exec.cachemount", "snapshots"]

    public init() {}

    public static func parse(_ filters: [String]) throws -> UsageFilter {
        var f = UsageFilter()
        for text in filters {
            for field in text.split(separator: ",") {
                let kv = field.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard kv.count == 2, !kv[1].isEmpty else { throw BuildFailure("--filter \(text): expected KEY=VALUE (until, type, id)") }
                switch kv[0].lowercased() {
                case "until", "unused-for":
                    guard let d = parseDuration(kv[1]) else {
                        throw BuildFailure("--filter \(field): expected a duration such as 24h, 2h30m or 90s")
                    }
                    f.until = d
                case "type":
                    guard kinds.contains(kv[1]) else {
                        throw BuildFailure("--filter \(field): expected type=\(kinds.joined(separator: "|"))")
                    }
                    f.types.insert(kv[1])
                case "id": f.ids.append(kv[1])
                default: throw BuildFailure("--filter \(field): unknown key \(kv[0]) (expected until, type or id)")
                }
            }
        }
        return f
    }

    public var isEmpty: Bool { self == UsageFilter() }

    /// Whether `item` is selected. An item whose last use is unknown never matches `until`.
    public func matches(_ item: DiskUsage.Item, now: Date) -> Bool {
        if !types.isEmpty && !types.contains(item.kind) { return false }
        if let until {
            guard let used = item.lastUsed, now.timeIntervalSince(used) >= until else { return false }
        }
        if !ids.isEmpty && !ids.contains(where: { item.name.hasPrefix($0) }) { return false }
        return true
    }
}

/// `24h`, `2h30m`, `1.5h`, `90s`, `10m` (Go's duration units h, m, s, ms); nil when not one.
public func parseDuration(_ text: String) -> TimeInterval? {
    var total: TimeInterval = 0
    var rest = Substring(text)
    guard !rest.isEmpty else { return nil }
    while !rest.isEmpty {
        let number = rest.prefix { $0.isNumber || $0 == "." }
        guard let n = Double(number) else { return nil }
        rest = rest.dropFirst(number.count)
        let unit = rest.prefix { $0.isLetter }
        rest = rest.dropFirst(unit.count)
        switch unit {
        case "h": total += n * 3600
        case "m": total += n * 60
        case "s": total += n
        case "ms": total += n / 1000
        default: return nil
        }
    }
    return total
}

extension ImageStore {
    public func diskUsage() throws -> DiskUsage {
        var items: [DiskUsage.Item] = []
        let cache = try CacheIndex(path: layout.cacheIndex)
        for step in try cache.steps() {
            items.append(.init(kind: "regular", name: step.key, bytes: step.layer?.size ?? 0, kept: true, lastUsed: step.lastUsed,
                               created: step.created, description: step.description ?? step.layer?.digest.description ?? ""))
        }
        for m in CacheMounts(root: layout.cacheMounts, tasks: SandboxTasks()).list() {
            items.append(.init(kind: "exec.cachemount", name: m.id, bytes: m.bytes, kept: true, lastUsed: m.lastUsed,
                               description: "RUN --mount=type=cache,id=\(m.id)"))
        }
        for kind in SnapshotterKind.allCases {
            let dir = layout.snapshots(kind: kind.rawValue)
            // A kind's directory with only its empty active/, layers/ and chains/ holds nothing.
            let entries = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).flatMap { sub in
                (try? FileManager.default.contentsOfDirectory(atPath: dir + "/" + sub)) ?? [sub]
            }
            guard !entries.isEmpty else { continue }
            items.append(.init(kind: "snapshots", name: kind.rawValue, bytes: RBuildSystem.diskUsage(dir), kept: true,
                               description: "unpacked layers (\(kind.rawValue))"))
        }
        if FileManager.default.fileExists(atPath: layout.git) {
            items.append(.init(kind: "source.git", name: "", bytes: RBuildSystem.diskUsage(layout.git), kept: true,
                               description: "git repositories of git sources"))
        }
        items.append(.init(kind: "blobs", name: "", bytes: RBuildSystem.diskUsage(layout.blobs), kept: true, description: "content store"))
        return DiskUsage(items: items)
    }

    /// `rbuild prune --filter … --keep-storage SIZE`: the cached steps, cache mounts and (with
    /// `type=snapshots`) unpacked snapshots `filter` selects; with `keepStorage`, of those only
    /// the least recently used until what the build cache (steps and cache mounts) holds is at
    /// most that many bytes. Then the blobs no image and no remaining step uses, as `prune`.
    public func prune(filter: UsageFilter, keepStorage: Int64? = nil) throws -> PruneResult {
        let usage = try diskUsage()
        let now = Date()
        var chosen = usage.items.filter { $0.kind != "blobs" && filter.matches($0, now: now) }
        // Snapshots and fetched git repositories are removed whole and only when asked for by
        // name: a build may be using them.
        for whole in ["snapshots", "source.git"] where !filter.types.contains(whole) { chosen.removeAll { $0.kind == whole } }
        if let keepStorage {
            var held = usage.items.filter { $0.kind == "regular" || $0.kind == "exec.cachemount" }.reduce(0) { $0 + $1.bytes }
            var lru: [DiskUsage.Item] = []
            for item in chosen.filter({ $0.kind != "snapshots" && $0.kind != "source.git" }).sorted(by: { ($0.lastUsed ?? .distantPast) < ($1.lastUsed ?? .distantPast) }) {
                guard held > keepStorage else { break }
                lru.append(item)
                held -= item.bytes
            }
            chosen = lru + chosen.filter { $0.kind == "snapshots" || $0.kind == "source.git" }
        }
        let cache = try CacheIndex(path: layout.cacheIndex)
        let steps = chosen.filter { $0.kind == "regular" }
        try cache.removeSteps(steps.map(\.name))
        var result = try prune(all: false)
        result.steps = steps.count
        result.stepBytes = steps.reduce(0) { $0 + $1.bytes }
        let mounts = CacheMounts(root: layout.cacheMounts, tasks: SandboxTasks())
        let chosenMounts = Set(chosen.filter { $0.kind == "exec.cachemount" }.map(\.name))
        for m in mounts.list() where chosenMounts.contains(m.id) {
            let (n, bytes) = try mounts.remove(m)
            result.cacheMounts += n
            result.cacheMountBytes += bytes
        }
        if chosen.contains(where: { $0.kind == "snapshots" }) {
            result.sweptDirectories += try removeSnapshots()
        }
        if chosen.contains(where: { $0.kind == "source.git" }), FileManager.default.fileExists(atPath: layout.git) {
            try removeTree(atPath: layout.git)
            result.sweptDirectories += 1
        }
        return result
    }
}

/// `1024`, `64k`, `512m`, `10GB`, `1.5GiB` (binary multiples, as docker's sizes): nil when not a size.
public func byteSize(_ text: String) -> Int64? { parseByteSize(text) }
