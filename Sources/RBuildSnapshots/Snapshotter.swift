import CArchive
import Foundation
import RBuildOCI
import RBuildSystem

/// The three ways rbuild gives a sandbox a writable root made of image layers.
public enum SnapshotterKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Kernel overlayfs mounted inside the sandbox's user namespace (userxattr).
    case overlay
    /// The fuse-overlayfs program, for hosts where the kernel refuses that mount.
    case fuseOverlayfs = "fuse-overlayfs"
    /// Full copies of each root (reflinked where the filesystem can): works anywhere.
    case copy

    public var description: String { rawValue }
}

/// An immutable root: the layers applied in order, named by their OCI chain ID.
public struct Snapshot: Sendable, Hashable {
    /// nil for the empty root (`FROM scratch`).
    public let chainID: Digest?
    /// Overlay kinds: one directory per layer, bottom first. Copy: the one full tree.
    public let directories: [String]

    public init(chainID: Digest?, directories: [String]) {
        self.chainID = chainID
        self.directories = directories
    }

    /// The chain ID of `diffID` applied on this snapshot (image-spec, "ChainID").
    public func chainID(adding diffID: Digest) -> Digest {
        guard let chainID else { return diffID }
        return Digest.of(Array("\(chainID) \(diffID)".utf8))
    }
}

/// A writable snapshot being used by one sandbox; committed or removed when the step ends.
public struct ActiveSnapshot: Sendable {
    public let parent: Snapshot
    /// Its own directory under the snapshotter's `active/`.
    public let directory: String
}

/// Disk use of one snapshotter's directory.
public struct SnapshotUsage: Sendable, Equatable {
    public var committed: Int
    public var active: Int
    public var bytes: Int64
}

/// Prepares, describes the mounts of, diffs and commits snapshots. Implementations keep
/// everything under their `root` (`<state>/snapshots/<kind>`, see `StateLayout`); writes go to a
/// temporary name and are renamed into place, so a crash leaves at worst a `tmp-*` or `active/*`
/// directory that `prune` removes. Work that needs the sandboxes' user namespace (owners,
/// removing trees subordinate ids own) goes through the `UserNamespaceTasks` they were made with.
public protocol Snapshotter: Sendable {
    var kind: SnapshotterKind { get }
    var root: String { get }
    /// The sandboxes' id mapping: layers are unpacked with their owners mapped through it (in
    /// single-id mode every file belongs to the one mapped user, root inside, and other owners
    /// are lost), and diffs record host owners mapped back through it.
    var mapping: IDMapping { get }
    /// How this snapshotter does work that needs the sandboxes' user namespace.
    var tasks: any UserNamespaceTasks { get }
    /// The most bytes a layer may unpack to (`--max-layer-size`).
    var maxLayerSize: Int64 { get }
    /// The snapshot of `layer` (a layer blob with this diffID) applied on `parent`; unpacked
    /// once and then shared, and refused (nothing kept) when its tar does not hash to `diffID`
    /// or passes `maxLayerSize` (`LayerCheck`).
    func apply(layer blob: StoredBlob, diffID: Digest, name: String, on parent: Snapshot) throws -> Snapshot
    /// The snapshot of a layer whose files the caller has made in `directory` (without deletion
    /// marks) and written as `blob`: the overlay kinds take the directory over (it is moved,
    /// after `owners` — entries not owned by root inside — are given their ids); the copy kind
    /// applies the blob. `directory` may be gone afterwards.
    func adopt(_ directory: String, layer blob: StoredBlob, diffID: Digest, name: String, owners: [Ownership.Record],
               on parent: Snapshot) throws -> Snapshot
    /// A new writable snapshot on top of `parent`.
    func prepare(_ parent: Snapshot) throws -> ActiveSnapshot
    /// The root a sandbox runs on to work in the active snapshot: its directory and, for
    /// overlays, the mount to make inside the sandbox's user namespace.
    func mounts(_ active: ActiveSnapshot) -> RootMounts
    /// The changes made in `active` since `prepare`, as an OCI layer in `store` (only hashed when
    /// `options.storesBlob` is false: `keepsLayerTrees`).
    func diff(_ active: ActiveSnapshot, store: ContentStore, options: LayerOptions) throws -> LayerResult
    /// Turns `active` into the immutable snapshot of `diffID` on its parent; `active` is gone.
    func commit(_ active: ActiveSnapshot, diffID: Digest) throws -> Snapshot
    /// A writable root over `parent` whose changes are thrown away (`rbuild run IMAGE`), using
    /// `scratch`, an empty directory removed by the caller; with the active snapshot to `remove`
    /// afterwards, or nil when nothing outlives the sandbox.
    func throwawayMounts(_ parent: Snapshot, scratch: String) throws -> (root: RootMounts, active: ActiveSnapshot?)
    /// A read-only root over `snapshot`, to mount besides a sandbox's own (RUN --mount from a
    /// stage or an image), using `scratch`, an empty directory removed by the caller.
    func readOnlyMounts(_ snapshot: Snapshot, scratch: String) throws -> RootMounts
    /// The directory that holds `active`'s changes (an overlay's upper directory, a copy's
    /// tree): where a build step's leftover mount points are removed before the diff.
    func changes(_ active: ActiveSnapshot) -> String
    /// Throws `active` away.
    func remove(_ active: ActiveSnapshot) throws
    func usage() throws -> SnapshotUsage
    /// Whether `commit` and `adopt` keep the tree a step wrote, as it was, as that layer's
    /// snapshot: then the step's layer need not be stored as a blob as well — the store records
    /// how to pack it again (`LayerRecipe`) and makes the blob when an export asks.
    var keepsLayerTrees: Bool { get }
    /// Whether the tree kept for layer `diffID` after `commit`/`adopt` is the step's own (or one
    /// kept the same way before) — not one unpacked from a blob, whose repack may differ.
    func keepsOwnTree(_ diffID: Digest) -> Bool
}

extension Snapshotter {
    public var keepsLayerTrees: Bool { false }
    public func keepsOwnTree(_ diffID: Digest) -> Bool { false }
}

/// Choosing a snapshotter: what the host allows and why.
public enum Snapshotters {
    public struct Availability: Sendable {
        public var kind: SnapshotterKind
        public var available: Bool
        public var detail: String
    }

    /// Each kind, whether it works here, and why (probes a real overlay mount in a user namespace,
    /// through `tasks`).
    public static func availability(tasks: any UserNamespaceTasks, stateDirectory: String? = nil) -> [Availability] {
        SnapshotterKind.allCases.map { check($0, tasks: tasks, stateDirectory: stateDirectory) }
    }

    /// Whether one kind works here (for a state dir in `stateDirectory`, when given), and why.
    public static func check(_ kind: SnapshotterKind, tasks: any UserNamespaceTasks, stateDirectory: String? = nil) -> Availability {
        switch kind {
        case .overlay:
            let kernel = KernelVersion.current
            if kernel < KernelVersion(6, 8) {
                return Availability(kind: .overlay, available: false,
                                    detail: "Linux \(kernel) is older than 6.8, which overlayfs needs to read xattr whiteouts in a user namespace")
            }
            var scratch: String?
            switch stateDirectory.flatMap(OverlayPlacement.scratch(forStateDirectory:)) {
            case .failure(let e)?: return Availability(kind: .overlay, available: false, detail: e.message)
            case .success(let dir)?: scratch = dir
            case nil: break
            }
            if let why = tasks.overlayMountProblem(in: scratch) {
                return Availability(kind: .overlay, available: false, detail: "overlayfs cannot be mounted in a user namespace here: \(why)")
            }
            return Availability(kind: .overlay, available: true, detail: "kernel overlayfs with userxattr in the sandbox's user namespace"
                                + (scratch.map { "; upper directories in \($0) (the state directory is on overlayfs)" } ?? ""))
        case .fuseOverlayfs:
            guard let program = fuseProgram() else {
                return Availability(kind: .fuseOverlayfs, available: false, detail: "no fuse-overlayfs program (apt install fuse-overlayfs)")
            }
            let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
            guard fd >= 0 else {
                return Availability(kind: .fuseOverlayfs, available: false,
                                    detail: "/dev/fuse cannot be opened: \(String(cString: strerror(errno))) (it must be mode 0666, as Debian's udev rules make it)")
            }
            close(fd)
            return Availability(kind: .fuseOverlayfs, available: true, detail: "\(program) with /dev/fuse")
        case .copy:
            return Availability(kind: .copy, available: true, detail: "full copies, reflinked where the filesystem allows")
        }
    }

    /// The requested kind (which must work here), or the first that works in the order
    /// overlay, fuse-overlayfs, copy; with the reason. Only the kinds needed are probed, unless
    /// `known` already holds the answers (`availability(tasks:)`).
    public static func choose(_ requested: SnapshotterKind?, known: [Availability] = [],
                              tasks: any UserNamespaceTasks, stateDirectory: String? = nil) throws -> (kind: SnapshotterKind, reason: String) {
        let check = { (kind: SnapshotterKind) in
            known.first { $0.kind == kind } ?? Snapshotters.check(kind, tasks: tasks, stateDirectory: stateDirectory)
        }
        if let requested {
            let a = check(requested)
            guard a.available else {
                throw SnapshotError("the \(requested) snapshotter cannot be used: \(a.detail); choose another with --snapshotter")
            }
            return (requested, "requested; \(a.detail)")
        }
        let env = ProcessInfo.processInfo.environment["RBUILD_SNAPSHOTTER"]
        if let env, !env.isEmpty {
            guard let kind = SnapshotterKind(rawValue: env) else {
                throw SnapshotError("RBUILD_SNAPSHOTTER=\(env) is not one of overlay, fuse-overlayfs, copy")
            }
            return try choose(kind, known: known, tasks: tasks, stateDirectory: stateDirectory)
        }
        var skipped: [String] = []
        for kind in SnapshotterKind.allCases {
            let a = check(kind)
            if a.available { return (kind, ([a.detail] + skipped).joined(separator: "; ")) }
            skipped.append("not \(kind): \(a.detail)")
        }
        return (.copy, skipped.joined(separator: "; "))   // unreachable: copy always works
    }

    /// A snapshotter of `kind` in the state directory; `tasks` (RBuildRuntime's `SandboxTasks`)
    /// gives it the sandboxes' id map and does what needs their user namespace.
    public static func make(_ kind: SnapshotterKind, stateDirectory: String, tasks: any UserNamespaceTasks,
                            maxLayerSize: Int64 = MaxLayerSize.defaultValue) throws -> any Snapshotter {
        switch kind {
        case .overlay: return try OverlaySnapshotter(stateDirectory: stateDirectory, fuseProgram: nil, tasks: tasks, maxLayerSize: maxLayerSize)
        case .fuseOverlayfs:
            guard let program = fuseProgram() else { throw SnapshotError("no fuse-overlayfs program: apt install fuse-overlayfs") }
            return try OverlaySnapshotter(stateDirectory: stateDirectory, fuseProgram: program, tasks: tasks, maxLayerSize: maxLayerSize)
        case .copy: return try CopySnapshotter(stateDirectory: stateDirectory, tasks: tasks, maxLayerSize: maxLayerSize)
        }
    }

    /// RBUILD_FUSE_OVERLAYFS, else `fuse-overlayfs` on PATH.
    public static func fuseProgram() -> String? {
        let env = ProcessInfo.processInfo.environment
        if let p = env["RBUILD_FUSE_OVERLAYFS"], !p.isEmpty { return access(p, X_OK) == 0 ? p : nil }
        for dir in (env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let p = String(dir) + "/fuse-overlayfs"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }
}

// MARK: - Shared plumbing

/// Removes a directory tree, never following symlinks. Entries owned by subordinate ids are
/// first given back to the invoking user from inside the user namespace.
package func removeDirectory(_ path: String, tasks: any UserNamespaceTasks) throws {
    do {
        try removeTree(atPath: path)
    } catch {
        guard tasks.mapping.mode != .single else { throw error }
        try tasks.reclaim(path)
        try removeTree(atPath: path)
    }
}

/// Restores the owners an unpacked layer recorded, where the id map can represent them.
func restoreOwners(_ records: [Ownership.Record], under root: String, tasks: any UserNamespaceTasks) throws {
    let mapping = tasks.mapping
    guard mapping.mode != .single else { return }
    let fits = records.filter { $0.uid <= mapping.maxInsideUID && $0.gid <= mapping.maxInsideGID }
    guard !fits.isEmpty else { return }
    try tasks.setOwners(fits, under: root)
}

/// Makes `final` by filling a temporary sibling and renaming it into place; a concurrent maker
/// that wins the rename is used instead. Returns `final`.
func materialise(_ final: String, in parent: String, tasks: any UserNamespaceTasks, fill: (String) throws -> Void) throws -> String {
    if access(final, F_OK) == 0 { return final }
    let tmp = try makeTemporaryDirectory(in: parent, prefix: "tmp-")
    do {
        try fill(tmp)
    } catch {
        try? removeDirectory(tmp, tasks: tasks)
        throw error
    }
    if rename(tmp, final) != 0 {
        try? removeDirectory(tmp, tasks: tasks)   // another process made it first: theirs is the same
        guard access(final, F_OK) == 0 else {
            throw SnapshotError("cannot rename \(tmp) to \(final): \(String(cString: strerror(errno)))")
        }
    }
    return final
}

/// Moves `tree` to `<final>/fs` by way of a temporary sibling of `final` (so `final` appears
/// whole or not at all); when `final` exists already (the same layer committed before), that one
/// stays and `tree` is left for the caller to remove. Returns `<final>/fs`.
func commitDirectory(_ tree: String, to final: String, tasks: any UserNamespaceTasks) throws -> String {
    let parent = String(final[..<final.lastIndex(of: "/")!])
    let tmp = try makeTemporaryDirectory(in: parent, prefix: "tmp-")
    var moved = rename(tree, tmp + "/fs") == 0
    if !moved && errno == EXDEV {
        // An upper directory off the state dir's filesystem (`OverlayPlacement`): copied, with
        // overlayfs's own marks (whiteouts, opaque directories) and the owners.
        do {
            let owners = try copyTree(from: tree, to: tmp + "/fs", mapping: tasks.mapping, keepOverlayMarks: true)
            try restoreOwners(owners, under: tmp + "/fs", tasks: tasks)
            moved = true
        } catch {
            try? removeDirectory(tmp, tasks: tasks)
            throw error
        }
    }
    if !moved || rename(tmp, final) != 0 {
        try? removeDirectory(tmp, tasks: tasks)
    }
    guard access(final + "/fs", F_OK) == 0 else { throw SnapshotError("cannot commit a snapshot to \(final)") }
    return final + "/fs"
}

func snapshotUsage(root: String, committed: String) throws -> SnapshotUsage {
    let count = { (dir: String) in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).count }
    var seen = Set<String>()
    var bytes: Int64 = 0
    func walk(_ fd: Int32) {
        for name in (try? sortedNames(fd)) ?? [] {
            var st = stat()
            guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if st.st_nlink > 1 && (st.st_mode & S_IFMT) != S_IFDIR {
                if !seen.insert("\(st.st_dev):\(st.st_ino)").inserted { continue }
            }
            bytes += Int64(st.st_blocks) * 512
            if (st.st_mode & S_IFMT) == S_IFDIR {
                let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if sub >= 0 { walk(sub); close(sub) }
            }
        }
    }
    let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 { walk(fd); close(fd) }
    return SnapshotUsage(committed: count(committed), active: count(root + "/active"), bytes: bytes)
}

// MARK: - Overlay (kernel or fuse-overlayfs)

/// Layers unpacked once into `layers/<diffID>/fs` and stacked by an overlay mounted in the
/// sandbox's own user namespace: by the kernel (xattr whiteouts, Linux 6.8+), or by
/// fuse-overlayfs started inside the sandbox (OCI `.wh.` files, which it reads as they are).
/// An active snapshot is `active/<id>/{upper,work}`; committing it renames `upper` into `layers/`.
public final class OverlaySnapshotter: Snapshotter {
    public let root: String
    public let fuseProgram: String?
    public let tasks: any UserNamespaceTasks
    public var mapping: IDMapping { tasks.mapping }
    public var kind: SnapshotterKind { fuseProgram == nil ? .overlay : .fuseOverlayfs }
    public let maxLayerSize: Int64
    let empty: String

    public init(stateDirectory: String, fuseProgram: String?, tasks: any UserNamespaceTasks,
                maxLayerSize: Int64 = MaxLayerSize.defaultValue) throws {
        self.fuseProgram = fuseProgram
        self.tasks = tasks
        self.maxLayerSize = maxLayerSize
        root = StateLayout(root: absolutePath(stateDirectory)).snapshots(kind: (fuseProgram == nil ? SnapshotterKind.overlay : .fuseOverlayfs).rawValue)
        empty = root + "/empty"
        active = root + "/active"
        for d in [root + "/layers", active, empty] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
        if fuseProgram == nil, let placement = OverlaySnapshotter.scratchUpperRoot(root) {
            switch placement {
            case .failure(let e): throw SnapshotError(e.message)
            case .success(let dir):
                upperRoot = dir
                if mkdir(upperRoot, 0o700) != 0 && errno != EEXIST {
                    throw SnapshotError("cannot create \(upperRoot): \(String(cString: strerror(errno)))")
                }
                var st = stat()
                guard lstat(upperRoot, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, st.st_uid == getuid() else {
                    throw SnapshotError("\(upperRoot) is not a directory of this user's: remove it, or set TMPDIR to a directory of your own")
                }
                return
            }
        }
        upperRoot = active
    }

    /// Where a kernel overlay snapshotter rooted at `root` makes its active snapshots when its
    /// state dir is on overlayfs (`OverlayPlacement`): one directory per user and state dir in
    /// the scratch directory, kept between builds (`prune` sweeps it). nil: in the state dir.
    static func scratchUpperRoot(_ root: String) -> Result<String, OverlayPlacement.PlacementError>? {
        OverlayPlacement.scratch(forStateDirectory: root)?.map {
            $0 + "/rbuild-upper-\(getuid())-" + Digest.of(Array(root.utf8)).hex.prefix(16)
        }
    }

    /// The state dir's directory of active snapshots.
    let active: String
    /// Where active snapshots are made: `active`, or a scratch directory off overlayfs when the
    /// state dir is on one (`OverlayPlacement`).
    public let upperRoot: String

    func layerDirectory(_ diffID: Digest) -> String { root + "/layers/" + diffID.hex }

    /// A committed or adopted upper directory is the layer's tree exactly as the step's diff
    /// packed it (a rename, never a copy) — unless upper directories live off the state dir's
    /// filesystem (`OverlayPlacement`), where committing copies them and turns whiteouts into
    /// xattr ones.
    public var keepsLayerTrees: Bool { upperRoot == active }

    /// A layer directory unpacked from a blob carries an `unpacked` mark beside its `fs`.
    public func keepsOwnTree(_ diffID: Digest) -> Bool {
        keepsLayerTrees && access(layerDirectory(diffID) + "/unpacked", F_OK) != 0
    }

    public func apply(layer blob: StoredBlob, diffID: Digest, name: String, on parent: Snapshot) throws -> Snapshot {
        let dir = try materialise(layerDirectory(diffID), in: root + "/layers", tasks: tasks) { tmp in
            try FileManager.default.createDirectory(atPath: tmp + "/fs", withIntermediateDirectories: false)
            // Its tree is the blob's unpacked, not a step's own: never a layer recipe's source.
            let mark = open(tmp + "/unpacked", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard mark >= 0 else { throw SnapshotError("cannot create \(tmp)/unpacked: \(String(cString: strerror(errno)))") }
            close(mark)
            let owners = try unpackLayer(blob, into: tmp + "/fs", layerName: name,
                                         whiteouts: fuseProgram == nil ? .overlayXattr : .ociFiles,
                                         check: LayerCheck(diffID: diffID, maxSize: maxLayerSize))
            try restoreOwners(owners, under: tmp + "/fs", tasks: tasks)
        }
        return Snapshot(chainID: parent.chainID(adding: diffID), directories: parent.directories + [dir + "/fs"])
    }

    public func adopt(_ directory: String, layer blob: StoredBlob, diffID: Digest, name: String, owners: [Ownership.Record],
                      on parent: Snapshot) throws -> Snapshot {
        // The topmost layer's root directory is the sandbox's "/": give it the parent's mode.
        var st = stat()
        chmod(directory, parent.directories.last.map { stat($0, &st) == 0 ? st.st_mode & 0o7777 : 0o755 } ?? 0o755)
        try restoreOwners(owners, under: directory, tasks: tasks)
        let final = try commitDirectory(directory, to: layerDirectory(diffID), tasks: tasks)
        if access(directory, F_OK) == 0 { try? removeDirectory(directory, tasks: tasks) }   // made before by another build
        return Snapshot(chainID: parent.chainID(adding: diffID), directories: parent.directories + [final])
    }

    public func prepare(_ parent: Snapshot) throws -> ActiveSnapshot {
        let dir = try makeTemporaryDirectory(in: upperRoot, prefix: "")
        for d in ["upper", "work", "merged"] { mkdir(dir + "/" + d, 0o755) }
        return ActiveSnapshot(parent: parent, directory: dir)
    }

    /// overlayfs lists the topmost layer first, and needs at least one.
    func lowers(_ s: Snapshot) -> [String] {
        s.directories.isEmpty ? [empty] : s.directories.reversed()
    }

    public func mounts(_ active: ActiveSnapshot) -> RootMounts {
        var overlay = OverlayRoot(lowerDirs: lowers(active.parent), upperDir: active.directory + "/upper", workDir: active.directory + "/work")
        overlay.fuseProgram = fuseProgram
        return RootMounts(rootfs: active.directory + "/merged", overlay: overlay)
    }

    /// The upper layer lives on a tmpfs inside the sandbox: nothing to remove afterwards.
    public func throwawayMounts(_ parent: Snapshot, scratch: String) throws -> (root: RootMounts, active: ActiveSnapshot?) {
        let merged = scratch + "/root", volatile = scratch + "/rw"
        for d in [merged, volatile] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        var overlay = OverlayRoot.throwaway(lowerDirs: lowers(parent), scratch: volatile)
        overlay.fuseProgram = fuseProgram
        return (RootMounts(rootfs: merged, overlay: overlay), nil)
    }

    /// The kernel mounts an overlay with no upper directory only over two lower ones or more:
    /// a one-layer snapshot gets the empty directory under it. fuse-overlayfs gets a throw-away
    /// upper (the mount is made read-only on top).
    public func readOnlyMounts(_ snapshot: Snapshot, scratch: String) throws -> RootMounts {
        if fuseProgram != nil { return try throwawayMounts(snapshot, scratch: scratch).root }
        let merged = scratch + "/root"
        try FileManager.default.createDirectory(atPath: merged, withIntermediateDirectories: true)
        var lowerDirs = lowers(snapshot)
        if lowerDirs.count == 1 { lowerDirs.append(empty) }
        return RootMounts(rootfs: merged, overlay: OverlayRoot(lowerDirs: lowerDirs))
    }

    public func changes(_ active: ActiveSnapshot) -> String { active.directory + "/upper" }

    public func diff(_ active: ActiveSnapshot, store: ContentStore, options: LayerOptions) throws -> LayerResult {
        var options = options
        options.mapOwners(through: mapping)
        return try writeLayer(fromDirectory: active.directory + "/upper", store: store, options: options)
    }

    public func commit(_ active: ActiveSnapshot, diffID: Digest) throws -> Snapshot {
        let final = try commitDirectory(active.directory + "/upper", to: layerDirectory(diffID), tasks: tasks)
        try remove(active)
        return Snapshot(chainID: active.parent.chainID(adding: diffID), directories: active.parent.directories + [final])
    }

    public func remove(_ active: ActiveSnapshot) throws {
        try removeDirectory(active.directory, tasks: tasks)
    }

    public func usage() throws -> SnapshotUsage {
        try snapshotUsage(root: root, committed: root + "/layers")
    }
}

// MARK: - Copy

/// Every snapshot is a full tree, `chains/<chainID>/fs`: applying a layer copies the parent's
/// tree (FICLONE reflinks where the filesystem has them, hard links kept) and applies the layer
/// onto it with deletions. An active snapshot is a copy too, bound as the sandbox's root; its diff
/// compares it with the parent's tree.
public final class CopySnapshotter: Snapshotter {
    public let root: String
    public var kind: SnapshotterKind { .copy }
    public let tasks: any UserNamespaceTasks
    public var mapping: IDMapping { tasks.mapping }
    public let maxLayerSize: Int64
    let empty: String

    public init(stateDirectory: String, tasks: any UserNamespaceTasks, maxLayerSize: Int64 = MaxLayerSize.defaultValue) throws {
        self.tasks = tasks
        self.maxLayerSize = maxLayerSize
        root = StateLayout(root: absolutePath(stateDirectory)).snapshots(kind: SnapshotterKind.copy.rawValue)
        empty = root + "/empty"
        for d in [root + "/chains", root + "/active", empty] {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        }
    }

    func tree(_ s: Snapshot) -> String { s.directories.last ?? empty }

    public func apply(layer blob: StoredBlob, diffID: Digest, name: String, on parent: Snapshot) throws -> Snapshot {
        let chainID = parent.chainID(adding: diffID)
        let dir = try materialise(root + "/chains/" + chainID.hex, in: root + "/chains", tasks: tasks) { tmp in
            var owners = try copyTree(from: tree(parent), to: tmp + "/fs", mapping: mapping)
            let layerOwners = try unpackLayer(blob, into: tmp + "/fs", layerName: name, whiteouts: .apply,
                                              check: LayerCheck(diffID: diffID, maxSize: maxLayerSize))
            // The layer's entries replace what the copy had under the same names.
            let replaced = Set(layerOwners.map(\.path))
            owners = owners.filter { !replaced.contains($0.path) } + layerOwners
            try restoreOwners(owners, under: tmp + "/fs", tasks: tasks)
        }
        return Snapshot(chainID: chainID, directories: [dir + "/fs"])
    }

    /// A copy snapshot is a full tree: the layer is applied onto a copy of the parent's.
    public func adopt(_ directory: String, layer blob: StoredBlob, diffID: Digest, name: String, owners: [Ownership.Record],
                      on parent: Snapshot) throws -> Snapshot {
        try apply(layer: blob, diffID: diffID, name: name, on: parent)
    }

    public func prepare(_ parent: Snapshot) throws -> ActiveSnapshot {
        let dir = try makeTemporaryDirectory(in: root + "/active", prefix: "")
        do {
            let owners = try copyTree(from: tree(parent), to: dir + "/fs", mapping: mapping)
            try restoreOwners(owners, under: dir + "/fs", tasks: tasks)
        } catch {
            try? removeDirectory(dir, tasks: tasks)
            throw error
        }
        return ActiveSnapshot(parent: parent, directory: dir)
    }

    public func mounts(_ active: ActiveSnapshot) -> RootMounts {
        RootMounts(rootfs: active.directory + "/fs")
    }

    /// A copy like any other, removed by the caller.
    public func throwawayMounts(_ parent: Snapshot, scratch: String) throws -> (root: RootMounts, active: ActiveSnapshot?) {
        let active = try prepare(parent)
        return (mounts(active), active)
    }

    /// The snapshot's own tree, bound read-only: nothing to copy.
    public func readOnlyMounts(_ snapshot: Snapshot, scratch: String) throws -> RootMounts {
        RootMounts(rootfs: tree(snapshot))
    }

    public func changes(_ active: ActiveSnapshot) -> String { active.directory + "/fs" }

    public func diff(_ active: ActiveSnapshot, store: ContentStore, options: LayerOptions) throws -> LayerResult {
        var options = options
        options.mapOwners(through: mapping)
        return try writeLayer(fromDirectory: active.directory + "/fs", base: tree(active.parent), store: store, options: options)
    }

    public func commit(_ active: ActiveSnapshot, diffID: Digest) throws -> Snapshot {
        let chainID = active.parent.chainID(adding: diffID)
        let final = try commitDirectory(active.directory + "/fs", to: root + "/chains/" + chainID.hex, tasks: tasks)
        try remove(active)
        return Snapshot(chainID: chainID, directories: [final])
    }

    public func remove(_ active: ActiveSnapshot) throws {
        try removeDirectory(active.directory, tasks: tasks)
    }

    public func usage() throws -> SnapshotUsage {
        try snapshotUsage(root: root, committed: root + "/chains")
    }
}

/// Copies a tree: regular files reflinked (FICLONE) where the filesystem allows, else copied with
/// copy_file_range; hard links kept as hard links; symlinks, fifos, device nodes, modes, times
/// (to the nanosecond) and user.*/security.capability xattrs kept. Never follows a symlink.
/// Owners are not copied (the copy belongs to the caller); the entries whose owner is not the
/// caller are returned with their ids inside `mapping`, for `Ownership.apply`.
@discardableResult
public func copyTree(from source: String, to destination: String, mapping: IDMapping,
                     keepOverlayMarks: Bool = false) throws -> [Ownership.Record] {
    var owners: [Ownership.Record] = []
    let src = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard src >= 0 else { throw SnapshotError("cannot open \(source): \(String(cString: strerror(errno)))") }
    defer { close(src) }
    guard mkdir(destination, 0o700) == 0 else {
        throw SnapshotError("cannot create \(destination): \(String(cString: strerror(errno)))")
    }
    let dst = open(destination, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard dst >= 0 else { throw SnapshotError("cannot open \(destination): \(String(cString: strerror(errno)))") }
    defer { close(dst) }
    var links: [String: (fd: Int32, name: String)] = [:]
    var linkDirs: [Int32] = []
    defer { for fd in linkDirs { close(fd) } }
    var canClone = true

    func fail(_ rel: String, _ what: String) -> SnapshotError {
        SnapshotError("copying \(source)/\(rel): \(what): \(String(cString: strerror(errno)))")
    }

    func finish(_ s: Int32, _ d: Int32, _ name: String, _ st: stat, isLink: Bool) {
        // The copy snapshotter's trees hold no overlay marks: deletions really happen there.
        if !isLink { copyLayerXattrs(from: s, name, to: d, name, overlayMarks: keepOverlayMarks) }
        if (st.st_mode & S_IFMT) != S_IFLNK { fchmodat(d, name, st.st_mode & 0o7777, 0) }
        var times = [st.st_atim, st.st_mtim]
        utimensat(d, name, &times, AT_SYMLINK_NOFOLLOW)
    }

    func walk(_ s: Int32, _ d: Int32, _ prefix: String) throws {
        for name in try sortedNames(s) {
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            var st = stat()
            guard fstatat(s, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw fail(rel, "stat") }
            let type = st.st_mode & S_IFMT
            if st.st_uid != mapping.hostUID || st.st_gid != mapping.hostGID {
                owners.append(Ownership.Record(path: rel, uid: mapping.insideID(host: st.st_uid, uid: true) ?? 65534,
                                               gid: mapping.insideID(host: st.st_gid, uid: false) ?? 65534,
                                               mode: UInt32(st.st_mode & 0o7777)))
            }
            if type != S_IFDIR && st.st_nlink > 1 {
                let key = "\(st.st_dev):\(st.st_ino)"
                if let first = links[key] {
                    guard linkat(first.fd, first.name, d, name, 0) == 0 else { throw fail(rel, "link") }
                    continue
                }
                let keep = fcntl(d, F_DUPFD_CLOEXEC, 0)
                linkDirs.append(keep)
                links[key] = (keep, name)
            }
            switch type {
            case S_IFDIR:
                guard mkdirat(d, name, 0o700) == 0 else { throw fail(rel, "mkdir") }
                let ss = openat(s, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard ss >= 0 else { throw fail(rel, "open") }
                defer { close(ss) }
                let dd = openat(d, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard dd >= 0 else { throw fail(rel, "open copy") }
                defer { close(dd) }
                try walk(ss, dd, rel)
            case S_IFREG:
                let fi = openat(s, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                guard fi >= 0 else { throw fail(rel, "open") }
                defer { close(fi) }
                let fo = openat(d, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fo >= 0 else { throw fail(rel, "create") }
                defer { close(fo) }
                guard copyContents(fi, fo, size: Int(st.st_size), canClone: &canClone) else { throw fail(rel, "copy") }
            case S_IFLNK:
                guard let target = linkTarget(s, name), symlinkat(target, d, name) == 0 else { throw fail(rel, "symlink") }
            case S_IFCHR where keepOverlayMarks && st.st_rdev == 0:
                // An overlayfs whiteout (0/0). The state dir may be an overlayfs itself, which
                // refuses to make those: it becomes an xattr whiteout, as unpacked layers have.
                let fo = openat(d, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fo >= 0 else { throw fail(rel, "create a whiteout") }
                close(fo)
                lsetxattr("/proc/self/fd/\(d)/\(name)", "user.overlay.whiteout", "", 0, 0)
                var mark = [CChar](repeating: 0, count: 2)
                if fgetxattr(d, "user.overlay.opaque", &mark, 1) != 1 { fsetxattr(d, "user.overlay.opaque", "x", 1, 0) }
                continue
            case S_IFIFO, S_IFCHR, S_IFBLK:
                guard mknodat(d, name, st.st_mode, st.st_rdev) == 0 else { throw fail(rel, "mknod") }
            default:
                continue   // sockets
            }
            finish(s, d, name, st, isLink: type == S_IFLNK)
        }
    }
    try walk(src, dst, "")
    var st = stat()
    fstat(src, &st)
    fchmod(dst, st.st_mode & 0o7777)
    return owners
}

/// State-dir hygiene for `rbuild prune`: what builds killed mid-way left (active snapshots,
/// `tmp-*` directories of half-made snapshots, staging directories under `<state>/tmp`) once it
/// is older than `age` seconds — younger ones may belong to a build running now — and, with
/// `snapshots`, every committed snapshot too (they are made again from the blobs when needed;
/// only for when no build runs). Returns how many entries went.
public func removeLeftovers(stateDirectory: String, olderThan age: TimeInterval, snapshots: Bool,
                            tasks: any UserNamespaceTasks) -> Int {
    let layout = StateLayout(root: stateDirectory)
    var removed = 0
    let now = Date().timeIntervalSince1970
    func sweep(_ dir: String, all: Bool = false, only: (String) -> Bool = { _ in true }) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where only(name) {
            var st = stat()
            guard lstat(dir + "/" + name, &st) == 0 else { continue }
            if all || now - Double(st.st_mtim.tv_sec) > age {
                if (try? removeDirectory(dir + "/" + name, tasks: tasks)) != nil { removed += 1 }
            }
        }
    }
    sweep(layout.tmp)
    for kind in SnapshotterKind.allCases {
        let root = layout.snapshots(kind: kind.rawValue)
        sweep(root + "/active")
        if kind == .overlay, let upper = try? OverlaySnapshotter.scratchUpperRoot(root)?.get() { sweep(upper) }
        for sub in ["layers", "chains"] {
            sweep(root + "/" + sub, only: { $0.hasPrefix("tmp-") })
            if snapshots { sweep(root + "/" + sub, all: true, only: { !$0.hasPrefix("tmp-") }) }
        }
    }
    return removed
}
