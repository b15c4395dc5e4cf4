import Foundation
import RBuildOCI
import RBuildSnapshots
import RBuildSystem

/// The directories of `RUN --mount=type=cache`, kept in the state dir across builds and shared
/// by every rbuild process on it (`StateLayout.cacheMounts`). A cache is found by its id (any
/// text: the directory is named by its digest, so an id such as `../../x` names nothing outside);
/// its contents are never part of a layer or of a cache key.
///
/// Sharing, between the steps of one build and between processes, rests on flock(2) on
/// `<n>.lock` beside each copy `<n>/`: `shared` holds copy 0 with a shared lock, `locked` with an
/// exclusive one (waiting for it), `private` takes the first copy no one holds. `prune` removes
/// only copies it can lock exclusively, so a cache in use is never pulled from under a step.
public final class CacheMounts: Sendable {
    public let root: String
    let tasks: any UserNamespaceTasks

    public init(root: String, tasks: any UserNamespaceTasks) {
        self.root = root
        self.tasks = tasks
    }

    /// One cache directory held for a step; `release` lets others have it.
    public final class Lease: @unchecked Sendable {
        public let path: String
        private var fd: Int32

        init(path: String, fd: Int32) {
            self.path = path
            self.fd = fd
        }

        deinit { release() }

        public func release() {
            if fd >= 0 { close(fd) }   // closing drops the flock
            fd = -1
        }
    }

    func directory(id: String) -> String {
        root + "/" + Digest.of(Array(id.utf8)).hex.prefix(32)
    }

    /// The directory of the cache `id`, locked as `sharing` says; made when missing, owned by
    /// `owner` (ids inside the sandbox) with `mode`, and filled by `seed` (which copies into the
    /// directory it is given and returns the owners to set) when it is.
    public func acquire(id: String, sharing: CacheSharing, owner: (uid: UInt32, gid: UInt32), mode: mode_t,
                        seed: ((String) throws -> [Ownership.Record])? = nil) throws -> Lease {
        let dir = directory(id: id)
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if access(dir + "/id", F_OK) != 0 {
                let tmp = dir + "/id.tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
                try writeNewFile(tmp, Array(id.utf8))
                rename(tmp, dir + "/id")
            }
        } catch {
            throw SolveError("cannot create the cache mount \(id) in \(dir): \(error)")
        }
        var n = 0
        while true {
            let lockPath = "\(dir)/\(n).lock"
            let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SolveError("cannot open \(lockPath): \(String(cString: strerror(errno)))") }
            let op: Int32
            switch sharing {
            case .shared: op = LOCK_SH
            case .locked: op = LOCK_EX
            case .private: op = LOCK_EX | LOCK_NB
            }
            let rc = retryingOnInterrupt { flock(fd, op) }
            if rc != 0 {
                let e = errno
                close(fd)
                if sharing == .private && e == EWOULDBLOCK {
                    n += 1
                    continue
                }
                throw SolveError("cannot lock the cache mount \(id) (\(lockPath)): \(String(cString: strerror(e)))")
            }
            futimens(fd, nil)   // its last use, for `du` and `prune --filter until=`
            let lease = Lease(path: "\(dir)/\(n)", fd: fd)
            if access(lease.path, F_OK) != 0 {
                // Two shared users may both find it missing: one makes it, under this lock.
                let creating = open(dir + "/create.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
                guard creating >= 0 else { throw SolveError("cannot open \(dir)/create.lock: \(String(cString: strerror(errno)))") }
                defer { close(creating) }
                guard retryingOnInterrupt({ flock(creating, LOCK_EX) }) == 0 else {
                    throw SolveError("cannot lock \(dir)/create.lock: \(String(cString: strerror(errno)))")
                }
                if access(lease.path, F_OK) != 0 {
                    try create(lease.path, id: id, owner: owner, mode: mode, seed: seed)
                }
            }
            return lease
        }
    }

    /// Makes a copy's directory under a temporary name (filled, owned), then renames it into
    /// place: a crash never leaves a half-made cache. The caller holds `create.lock`.
    private func create(_ path: String, id: String, owner: (uid: UInt32, gid: UInt32), mode: mode_t,
                        seed: ((String) throws -> [Ownership.Record])?) throws {
        let parent = (path as NSString).deletingLastPathComponent
        let tmp = try makeTemporaryDirectory(in: parent, prefix: "tmp-")
        do {
            let data = tmp + "/data"
            guard mkdir(data, 0o755) == 0 else { throw SystemError("mkdir", path: data) }
            var records = try seed?(data) ?? []
            records = records.map { r in
                var r = r
                r.path = "data/" + r.path
                return r
            }
            records.append(Ownership.Record(path: "data", uid: owner.uid, gid: owner.gid, mode: UInt32(mode & 0o7777)))
            chmod(data, mode & 0o7777)
            if records.contains(where: { $0.uid != 0 || $0.gid != 0 }) {
                try tasks.setOwners(records, under: tmp)
            }
            guard rename(data, path) == 0 else { throw SystemError("rename", path: path) }
        } catch {
            try? removeDirectory(tmp, tasks: tasks)
            throw SolveError("cannot make the cache mount \(id): \(error)")
        }
        try? removeDirectory(tmp, tasks: tasks)
    }

    /// Runs `body` on the shared copy of cache `id` (`<n>` = 0, the one `shared` and `locked`
    /// steps use) under a shared lock, when this state dir has it; nil when it has not.
    public func withExisting<T>(id: String, _ body: (String) throws -> T) throws -> T? {
        let dir = directory(id: id)
        guard access(dir + "/0", F_OK) == 0 else { return nil }
        let fd = open(dir + "/0.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SolveError("cannot open \(dir)/0.lock: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard retryingOnInterrupt({ flock(fd, LOCK_SH) }) == 0 else {
            throw SolveError("cannot lock the cache mount \(id) (\(dir)/0.lock): \(String(cString: strerror(errno)))")
        }
        guard access(dir + "/0", F_OK) == 0 else { return nil }   // pruned while we waited
        return try body(dir + "/0")
    }

    /// One cache as `du` and `prune` see it.
    public struct Entry: Sendable {
        public var id: String
        public var directory: String
        public var copies: Int
        public var bytes: Int64
        /// When a step last took one of its copies.
        public var lastUsed: Date?
    }

    /// Every cache in the state dir, with the bytes its copies hold.
    public func list() -> [Entry] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
        return names.sorted().compactMap { name in
            let dir = root + "/" + name
            guard let idBytes = FileManager.default.contents(atPath: dir + "/id") else { return nil }
            let copies = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { Int($0) != nil }
            // `acquire` touches a copy's lock file each time a step takes it.
            let used = copies.compactMap { n -> Date? in
                var st = stat()
                guard stat("\(dir)/\(n).lock", &st) == 0 else { return nil }
                return Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec))
            }.max()
            return Entry(id: String(decoding: idBytes, as: UTF8.self), directory: dir, copies: copies.count,
                         bytes: copies.reduce(0) { $0 + diskUsage(dir + "/" + $1) }, lastUsed: used)
        }
    }

    /// Removes the copies of one cache no step holds (the cache itself when none is held);
    /// returns how many copies and bytes went.
    public func remove(_ entry: Entry, dryRun: Bool = false) throws -> (copies: Int, bytes: Int64) {
        var copies = 0, bytes: Int64 = 0
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: entry.directory)) ?? []).filter { Int($0) != nil }
        var kept = 0
        for name in names {
            let fd = open("\(entry.directory)/\(name).lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { kept += 1; continue }
            defer { close(fd) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { kept += 1; continue }
            let size = diskUsage(entry.directory + "/" + name)
            if !dryRun { try removeDirectory(entry.directory + "/" + name, tasks: tasks) }
            copies += 1
            bytes += size
        }
        if kept == 0 && !dryRun { try removeDirectory(entry.directory, tasks: tasks) }
        return (copies, bytes)
    }

    /// Removes every cache no step holds (copies in use stay); returns how many copies and bytes
    /// went. With `dryRun`, only counts.
    public func removeAll(dryRun: Bool = false) throws -> (copies: Int, bytes: Int64) {
        var copies = 0, bytes: Int64 = 0
        for entry in list() {
            let (c, b) = try remove(entry, dryRun: dryRun)
            copies += c
            bytes += b
        }
        return (copies, bytes)
    }
}
