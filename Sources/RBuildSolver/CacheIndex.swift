import CSQLite
import Foundation
import RBuildOCI
import Synchronization

/// Failures of the solver: a step that failed, a cache index that cannot be used.
public struct SolveError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a cached step produced: a layer (in the content store) or no layer at all.
public struct CachedResult: Sendable, Equatable {
    /// nil: the step changed no file (an empty layer, left out of the image).
    public var layer: Descriptor?
    public var diffID: Digest?

    public init(layer: Descriptor?, diffID: Digest?) {
        self.layer = layer
        self.diffID = diffID
    }
}

/// The persistent cache index, `<state>/cache.db`: step key → result, and the digests of
/// context files by their identity (device, inode, size, mtime, ctime), so that a warm build
/// reads no unchanged file again. SQLite in WAL mode with a busy timeout: several rbuild
/// processes may build on one state dir at once, and a process killed mid-write leaves the
/// database as it was before the write (SQLite's journal).
public final class CacheIndex: Sendable {
    /// A sqlite3 connection (opened NOMUTEX): only ever used inside `connection`'s lock, which
    /// is what makes handing it between threads sound.
    private struct Handle: @unchecked Sendable { let raw: OpaquePointer }
    private let connection: Mutex<Handle>
    public let path: String

    public init(path: String) throws {
        self.path = path
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw SolveError("cannot open the cache index \(path): \(msg) (remove it to start with an empty cache)")
        }
        sqlite3_busy_timeout(handle, 30_000)
        do {
            try CacheIndex.exec(handle, path, "PRAGMA journal_mode=WAL")
            try CacheIndex.exec(handle, path, "PRAGMA synchronous=NORMAL")
            try CacheIndex.exec(handle, path, """
                CREATE TABLE IF NOT EXISTS steps(key TEXT PRIMARY KEY, layer TEXT, media_type TEXT,
                    size INTEGER, diff_id TEXT, created INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER,
                    mtime INTEGER, ctime INTEGER, digest TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS conversions(source TEXT, compression TEXT, target TEXT NOT NULL,
                    media_type TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY(source, compression));
                """)
            // Columns added since the table was first made: when a step was last used (`du`,
            // `prune --filter until=`, `--keep-storage`) and its name (`du --verbose`).
            var columns = Set<String>()
            try CacheIndex.query(handle, path, "PRAGMA table_info(steps)", []) { s in
                if let n = CacheIndex.text(s, 1) { columns.insert(n) }
            }
            // (Another process opening the index at once may add them first: its error is ignored.)
            if !columns.contains("used") { try? CacheIndex.exec(handle, path, "ALTER TABLE steps ADD COLUMN used INTEGER") }
            if !columns.contains("description") { try? CacheIndex.exec(handle, path, "ALTER TABLE steps ADD COLUMN description TEXT") }
        } catch {
            sqlite3_close(handle)
            throw error
        }
        connection = Mutex(Handle(raw: handle))
    }

    deinit { connection.withLock { _ = sqlite3_close($0.raw) } }

    /// SQLite answers BUSY without waiting in a few cases the busy timeout does not cover
    /// (switching a new database to WAL while another process opens it, a read that must become a
    /// write): those are retried here, for up to 30 s.
    static func retryingBusy(_ body: () -> Int32) -> Int32 {
        var rc = body()
        var waited = 0
        while (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && waited < 30_000 {
            usleep(10_000)
            waited += 10
            rc = body()
        }
        return rc
    }

    private static func exec(_ db: OpaquePointer, _ path: String, _ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = CacheIndex.retryingBusy {
            sqlite3_free(err)
            err = nil
            return sqlite3_exec(db, sql, nil, nil, &err)
        }
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? "unknown error"
            sqlite3_free(err)
            throw SolveError("cache index \(path): \(msg)")
        }
    }

    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    /// Runs one statement with text/integer bindings; `row` sees each result row.
    private func query(_ sql: String, _ binds: [Any?], row: ((OpaquePointer) -> Void)? = nil) throws {
        try connection.withLock { db in try CacheIndex.query(db.raw, path, sql, binds, row: row) }
    }

    private static func query(_ db: OpaquePointer?, _ path: String, _ sql: String, _ binds: [Any?],
                              row: ((OpaquePointer) -> Void)?) throws {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK else {
            throw SolveError("cache index \(path): \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(stmt) }
        for (i, b) in binds.enumerated() {
            let at = Int32(i + 1)
            switch b {
            case let s as String: sqlite3_bind_text(stmt, at, s, -1, CacheIndex.transient)
            case let n as Int64: sqlite3_bind_int64(stmt, at, n)
            case let n as Int: sqlite3_bind_int64(stmt, at, Int64(n))
            case let n as UInt64: sqlite3_bind_int64(stmt, at, Int64(bitPattern: n))
            default: sqlite3_bind_null(stmt, at)
            }
        }
        while true {
            let rc = CacheIndex.retryingBusy {
                let rc = sqlite3_step(stmt)
                if rc == SQLITE_BUSY || rc == SQLITE_LOCKED { sqlite3_reset(stmt) }
                return rc
            }
            if rc == SQLITE_ROW { row?(stmt!); continue }
            if rc == SQLITE_DONE { return }
            throw SolveError("cache index \(path): \(String(cString: sqlite3_errmsg(db)))")
        }
    }

    private static func text(_ stmt: OpaquePointer, _ col: Int32) -> String? {
        sqlite3_column_text(stmt, col).map { String(cString: $0) }
    }

    public func lookup(_ key: Digest) throws -> CachedResult? {
        var found: CachedResult?
        var bad = false
        try query("SELECT layer, media_type, size, diff_id FROM steps WHERE key = ?", [key.hex]) { s in
            guard let layer = CacheIndex.text(s, 0) else { found = CachedResult(layer: nil, diffID: nil); return }
            guard let d = try? Digest(parsing: layer), let diff = CacheIndex.text(s, 3).flatMap({ try? Digest(parsing: $0) }),
                  let type = CacheIndex.text(s, 1) else { bad = true; return }
            found = CachedResult(layer: Descriptor(mediaType: type, digest: d, size: sqlite3_column_int64(s, 2)), diffID: diff)
        }
        return bad ? nil : found
    }

    /// Remembers a step's result; `description` is the step's name (`[2/3] RUN make`).
    public func store(_ key: Digest, _ result: CachedResult, description: String? = nil) throws {
        let now = Int64(Date().timeIntervalSince1970)
        try query("INSERT OR REPLACE INTO steps(key, layer, media_type, size, diff_id, created, used, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  [key.hex, result.layer?.digest.description, result.layer?.mediaType, result.layer?.size,
                   result.diffID?.description, now, now, description])
    }

    /// A build used the step's cached result now.
    public func markUsed(_ key: Digest) throws {
        try query("UPDATE steps SET used = ? WHERE key = ?", [Int64(Date().timeIntervalSince1970), key.hex])
    }

    /// One cached step as `du` and `prune` see it.
    public struct Step: Sendable {
        public var key: String
        public var layer: Descriptor?
        public var created: Date
        /// When a build last used it (its creation, for a step cached before this was kept).
        public var lastUsed: Date
        public var description: String?
    }

    /// Every cached step.
    public func steps() throws -> [Step] {
        var out: [Step] = []
        try query("SELECT key, layer, media_type, size, created, used, description FROM steps", []) { s in
            guard let key = CacheIndex.text(s, 0) else { return }
            var layer: Descriptor?
            if let l = CacheIndex.text(s, 1).flatMap({ try? Digest(parsing: $0) }), let type = CacheIndex.text(s, 2) {
                layer = Descriptor(mediaType: type, digest: l, size: sqlite3_column_int64(s, 3))
            }
            let created = sqlite3_column_int64(s, 4)
            let used = sqlite3_column_type(s, 5) == SQLITE_NULL ? created : sqlite3_column_int64(s, 5)
            out.append(Step(key: key, layer: layer, created: Date(timeIntervalSince1970: Double(created)),
                            lastUsed: Date(timeIntervalSince1970: Double(used)), description: CacheIndex.text(s, 6)))
        }
        return out
    }

    /// Forgets these steps (`prune --filter`, `--keep-storage`); their layers then go with the
    /// blobs nothing else uses.
    public func removeSteps(_ keys: [String]) throws {
        guard !keys.isEmpty else { return }
        try connection.withLock { db in
            try CacheIndex.query(db.raw, path, "BEGIN IMMEDIATE", [], row: nil)
            do {
                for k in keys { try CacheIndex.query(db.raw, path, "DELETE FROM steps WHERE key = ?", [k], row: nil) }
                try CacheIndex.query(db.raw, path, "COMMIT", [], row: nil)
            } catch {
                try? CacheIndex.query(db.raw, path, "ROLLBACK", [], row: nil)
                throw error
            }
        }
    }

    /// A layer blob already compressed as `compression` (e.g. "gzip:6") from `source`.
    public func conversion(of source: Digest, _ compression: String) throws -> Descriptor? {
        var found: Descriptor?
        try query("SELECT target, media_type, size FROM conversions WHERE source = ? AND compression = ?",
                  [source.description, compression]) { s in
            if let t = CacheIndex.text(s, 0).flatMap({ try? Digest(parsing: $0) }), let m = CacheIndex.text(s, 1) {
                found = Descriptor(mediaType: m, digest: t, size: sqlite3_column_int64(s, 2))
            }
        }
        return found
    }

    public func rememberConversion(of source: Digest, _ compression: String, _ target: Descriptor) throws {
        try query("INSERT OR REPLACE INTO conversions(source, compression, target, media_type, size) VALUES (?, ?, ?, ?, ?)",
                  [source.description, compression, target.digest.description, target.mediaType, target.size])
    }

    /// Every layer digest the index refers to (roots for garbage collection).
    public func layerDigests() throws -> [Digest] {
        var out: [Digest] = []
        try query("SELECT DISTINCT layer FROM steps WHERE layer IS NOT NULL UNION SELECT target FROM conversions", []) { s in
            if let t = CacheIndex.text(s, 0), let d = try? Digest(parsing: t) { out.append(d) }
        }
        return out
    }

    /// Forgets every step (`rbuild prune --all`).
    public func clearSteps() throws {
        try query("DELETE FROM steps", [])
        try query("DELETE FROM conversions", [])
    }

    /// The identity of a file as far as the file digest cache is concerned.
    public struct FileIdentity: Hashable, Sendable {
        public var dev: UInt64, ino: UInt64, size: Int64, mtime: Int64, ctime: Int64
        public init(dev: UInt64, ino: UInt64, size: Int64, mtime: Int64, ctime: Int64) {
            self.dev = dev; self.ino = ino; self.size = size; self.mtime = mtime; self.ctime = ctime
        }
    }

    /// The digests remembered for files below `prefix`, by the identity each was hashed with.
    /// A file whose identity is a key here has that digest; which path it was seen at does not
    /// matter (the device and inode are in the identity), so no path is read or hashed.
    public func fileDigests(under prefix: String) throws -> [FileIdentity: Digest] {
        var out: [FileIdentity: Digest] = [:]
        out.reserveCapacity(1024)
        try query("SELECT dev, ino, size, mtime, ctime, digest FROM files WHERE path >= ? AND path < ?",
                  [prefix + "/", prefix + "0"]) { s in
            guard let text = sqlite3_column_text(s, 5),
                  let d = Digest(utf8: UnsafeBufferPointer(start: text, count: Int(sqlite3_column_bytes(s, 5)))) else { return }
            let id = FileIdentity(dev: UInt64(bitPattern: sqlite3_column_int64(s, 0)), ino: UInt64(bitPattern: sqlite3_column_int64(s, 1)),
                                  size: sqlite3_column_int64(s, 2), mtime: sqlite3_column_int64(s, 3), ctime: sqlite3_column_int64(s, 4))
            out[id] = d
        }
        return out
    }

    /// One transaction, one prepared statement: a context of thousands of new files is
    /// remembered in milliseconds, not a statement compiled per file.
    public func rememberFiles(_ entries: [(path: String, identity: FileIdentity, digest: Digest)]) throws {
        guard !entries.isEmpty else { return }
        try connection.withLock { db in
            let raw = db.raw
            try CacheIndex.query(raw, path, "BEGIN IMMEDIATE", [], row: nil)
            var stmt: OpaquePointer?
            defer { sqlite3_finalize(stmt) }
            do {
                let sql = "INSERT OR REPLACE INTO files(path, dev, ino, size, mtime, ctime, digest) VALUES (?, ?, ?, ?, ?, ?, ?)"
                guard sqlite3_prepare_v2(raw, sql, -1, &stmt, nil) == SQLITE_OK else {
                    throw SolveError("cache index \(path): \(String(cString: sqlite3_errmsg(raw)))")
                }
                for e in entries {
                    sqlite3_bind_text(stmt, 1, e.path, -1, CacheIndex.transient)
                    sqlite3_bind_int64(stmt, 2, Int64(bitPattern: e.identity.dev))
                    sqlite3_bind_int64(stmt, 3, Int64(bitPattern: e.identity.ino))
                    sqlite3_bind_int64(stmt, 4, e.identity.size)
                    sqlite3_bind_int64(stmt, 5, e.identity.mtime)
                    sqlite3_bind_int64(stmt, 6, e.identity.ctime)
                    sqlite3_bind_text(stmt, 7, e.digest.description, -1, CacheIndex.transient)
                    let rc = CacheIndex.retryingBusy {
                        let rc = sqlite3_step(stmt)
                        if rc == SQLITE_BUSY || rc == SQLITE_LOCKED { sqlite3_reset(stmt) }
                        return rc
                    }
                    guard rc == SQLITE_DONE else { throw SolveError("cache index \(path): \(String(cString: sqlite3_errmsg(raw)))") }
                    sqlite3_reset(stmt)
                }
                try CacheIndex.query(raw, path, "COMMIT", [], row: nil)
            } catch {
                try? CacheIndex.query(raw, path, "ROLLBACK", [], row: nil)
                throw error
            }
        }
    }
}
