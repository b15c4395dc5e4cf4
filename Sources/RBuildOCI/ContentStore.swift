import Foundation
import RBuildSystem

/// A content-addressed blob store: `ROOT/blobs/sha256/<hex>`.
///
/// Writes go to a temp file in `ROOT/ingest/`, are fsynced, and are renamed into place only once
/// their digest is known (and, when one was expected, matches): a reader never sees a partial or
/// unverified blob, and two processes writing the same blob both succeed (the second rename
/// replaces identical bytes). Blobs that rbuild did not write itself are verified as they are read.
public final class ContentStore: @unchecked Sendable {
    public let root: String
    /// Where blobs and temp files are under `root` (a state directory's layout; a staging store
    /// or an image layout has the same `blobs/sha256`).
    let layout: StateLayout

    public init(root: String) throws {
        self.root = root
        layout = StateLayout(root: root)
        for dir in [layout.sha256Blobs, layout.ingest] {
            try makeDirectory(dir)
        }
    }

    public func path(_ d: Digest) -> String { layout.sha256Blobs + "/" + d.hex }

    /// Whether the store has blob `d`, as a file or as a layer it can pack again (`LayerRecipe`).
    public func contains(_ d: Digest) -> Bool { access(path(d), F_OK) == 0 || packableRecipe(d) != nil }

    /// Stores `bytes`; with `expected`, refuses bytes that do not match it.
    @discardableResult
    public func put(_ bytes: [UInt8], expected: Digest? = nil) throws -> Digest {
        let w = try BlobWriter(store: self)
        try w.write(bytes)
        return try w.commit(expected: expected).digest
    }

    /// Streams the file at `fd` into the store, hashing as it goes. Reading stops one byte past
    /// `expectedSize` or `limit` (a file that claims to be a small document and is not ends
    /// there, not at its end): `corruptBlob` past the expected size, `tooLarge` past the limit.
    public func ingest(fd: Int32, expected: Digest? = nil, expectedSize: Int64? = nil, limit: Int64? = nil) throws -> (digest: Digest, size: Int64) {
        let w = try BlobWriter(store: self)
        let cap = min(expectedSize ?? .max, limit ?? .max)
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let left = cap - w.size   // one byte more than that tells a blob over the cap
            let want = left >= Int64(buf.count) ? buf.count : Int(left) + 1
            let n = buf.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, want) }
            if n < 0 {
                if errno == EINTR { continue }
                w.abort()
                throw OCIError(.io, "reading blob data failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            try buf.withUnsafeBytes { try w.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            if w.size > cap { break }
        }
        let what = "blob \(expected.map(\.description) ?? "data")"
        if let limit, w.size > limit, limit <= expectedSize ?? .max {
            w.abort()
            throw OCIError(.tooLarge, "\(what) has more than \(limit) bytes: refused")
        }
        if let expectedSize, w.size != expectedSize {
            w.abort()
            throw OCIError(.corruptBlob, "\(what) has \(w.size > expectedSize ? "more than \(expectedSize)" : "\(w.size)") bytes, expected \(expectedSize)")
        }
        let r = try w.commit(expected: expected)
        return (r.digest, r.size)
    }

    /// Copies blob `d` from the image layout (or exported cache) at `layout` into the store,
    /// verified. The file is opened non-blocking and read only when it is a regular file: a FIFO
    /// planted as a blob would hang the reader, a device would never end.
    public func ingestLayoutBlob(_ layout: String, _ d: Digest, size: Int64?, limit: Int64? = nil) throws {
        let fd = open(layout + "/blobs/sha256/" + d.hex, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { throw OCIError(.missingBlob, "\(layout) refers to blob \(d), which it does not contain") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw OCIError(.unsafeEntry, "\(layout): blob \(d) is not a regular file (a FIFO, device, socket or directory): refused")
        }
        _ = try ingest(fd: fd, expected: d, expectedSize: size, limit: limit)
    }

    /// The whole blob, verified against its digest (and `size` when the caller knows it): for
    /// manifests and configs, small enough to hold.
    public func read(_ d: Digest, size: Int64? = nil, limit: Int = 4 << 20) throws -> [UInt8] {
        let reader = try BlobReader(blob(d, size: size))
        if reader.fileSize > limit {
            throw OCIError(.tooLarge, "blob \(d) has \(reader.fileSize) bytes, over the \(limit) a manifest, index or config may have: refused")
        }
        var bytes = [UInt8](repeating: 0, count: Int(reader.fileSize))
        var off = 0
        while off < bytes.count {
            let n = try bytes.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[off...])) }
            if n == 0 { break }
            off += n
        }
        try reader.finish()
        return bytes
    }

    /// Re-hashes a blob of any size; throws `corruptBlob` or `missingBlob`.
    public func verify(_ d: Digest, size: Int64? = nil) throws {
        try BlobReader(blob(d, size: size)).finish()
    }

    public func size(_ d: Digest) -> Int64? {
        var st = stat()
        return stat(path(d), &st) == 0 ? Int64(st.st_size) : recipe(d)?.size
    }

    public func allBlobs() -> [Digest] { digests(namedIn: layout.sha256Blobs) }

    /// The digests that name files in `directory` (by their hex), sorted; other names are skipped.
    func digests(namedIn directory: String) -> [Digest] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .compactMap { try? Digest(parsing: "sha256:" + $0) }.sorted()
    }

    /// Deletes every blob but those in `live`, the layer recipes of others (those younger than
    /// `recipeGrace` seconds only when their blob exists: a running step may not have stored
    /// its cache record yet), and temp files of writers that died. Returns the number of blobs
    /// and bytes removed.
    @discardableResult
    public func removeBlobs(except live: Set<Digest>, recipeGrace: Int = 3600) throws -> (blobs: Int, bytes: Int64) {
        var removed = 0
        var bytes: Int64 = 0
        for d in allBlobs() where !live.contains(d) {
            bytes += size(d) ?? 0
            if unlink(path(d)) == 0 { removed += 1 }
        }
        // A recipe nothing names goes (its directory is a snapshot: prune --all removes those).
        // So does one whose blob exists after all; a young one may belong to a step that
        // recorded it and has not yet stored its cache record.
        for d in allRecipes() {
            let hasBlob = access(path(d), F_OK) == 0
            guard hasBlob || !live.contains(d) else { continue }
            var st = stat()
            if hasBlob || (stat(recipePath(d), &st) == 0 && time(nil) - st.st_mtim.tv_sec >= recipeGrace) {
                unlink(recipePath(d))
            }
        }
        // Temp files of writers that died (older than an hour) go too.
        let ingest = layout.ingest
        for name in (try? FileManager.default.contentsOfDirectory(atPath: ingest)) ?? [] {
            var st = stat()
            if stat(ingest + "/" + name, &st) == 0, time(nil) - st.st_mtim.tv_sec > 3600 { unlink(ingest + "/" + name) }
        }
        return (removed, bytes)
    }
}

/// Streams one blob into the store. `commit` verifies and publishes it; `abort` removes it.
public final class BlobWriter {
    let store: ContentStore
    let tempPath: String
    let fd: Int32
    let hasher = SHA256()
    /// false: the caller hashes the same bytes already and passes the digest to `commit(known:)`.
    var hashing = true
    public private(set) var size: Int64 = 0
    var done = false

    public init(store: ContentStore) throws {
        self.store = store
        var template = Array("\(store.layout.ingest)/blob-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw OCIError(.io, "cannot create a temp file in \(store.layout.ingest): \(String(cString: strerror(errno)))")
        }
        // mkstemp makes 0600 files; blobs are ordinary readable files (exports link to them).
        fchmod(fd, 0o644)
        self.fd = fd
        self.tempPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    deinit {
        if !done { abort() }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if hashing { hasher.update(bytes) }
        do {
            try writeFully(fd, bytes, what: "a new blob in the content store \(store.root)")
        } catch {
            abort()
            throw error
        }
        size += Int64(bytes.count)
    }

    /// fsync, check the digest, rename into `blobs/sha256/`.
    public func commit(expected: Digest? = nil) throws -> (digest: Digest, size: Int64) {
        try commit(expected: expected, known: nil)
    }

    func commit(expected: Digest?, known: Digest?) throws -> (digest: Digest, size: Int64) {
        guard !done else { throw OCIError(.io, "blob writer already finished") }
        done = true
        let digest = known ?? hasher.finish()
        if fsync(fd) != 0 {
            let e = errno
            close(fd)
            unlink(tempPath)
            throw OCIError(.io, "fsync of a new blob failed: \(String(cString: strerror(e)))")
        }
        close(fd)
        if let expected, expected != digest {
            unlink(tempPath)
            throw OCIError(.corruptBlob, "blob \(expected) is corrupt: expected \(expected), got \(digest)")
        }
        if rename(tempPath, store.path(digest)) != 0 {
            let e = errno
            unlink(tempPath)
            throw OCIError(.io, "cannot store blob \(digest): \(String(cString: strerror(e)))")
        }
        return (digest, size)
    }

    public func abort() {
        guard !done else { return }
        done = true
        close(fd)
        unlink(tempPath)
    }
}

func makeDirectory(_ path: String) throws {
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        throw OCIError(.io, "cannot create directory \(path): \(error.localizedDescription)")
    }
}

/// Writes a whole file (created or truncated) and fsyncs it. Plain syscalls: Foundation's atomic
/// writes leave TemporaryDirectory.* behind on Linux.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw OCIError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    try bytes.withUnsafeBytes { try writeFully(fd, $0, what: path) }
    fsync(fd)
}
