import CArchive
import CZlib
import CZstd
import Foundation
import RBuildSystem

/// Layer compression.
public enum Compression: String, Sendable, CaseIterable {
    case none, gzip, zstd

    public var mediaType: String {
        switch self {
        case .none: return MediaType.ociLayer
        case .gzip: return MediaType.ociLayerGzip
        case .zstd: return MediaType.ociLayerZstd
        }
    }
}

/// How a layer is written.
public struct LayerOptions: Sendable {
    public var compression: Compression = .gzip
    /// zlib 1-9 (default 6) or zstd 1-19 (default 3).
    public var level: Int?
    /// With SOURCE_DATE_EPOCH, no entry is newer than this (reproducible builds).
    public var sourceDateEpoch: Int64?
    /// Host ownership → recorded ownership. The default records the invoking user's own files as
    /// root's (rootless single-id mode: that user is root inside) and keeps other ids.
    public var ownership: @Sendable (UInt32, UInt32) -> (UInt32, UInt32)
    /// Recorded ownership by path (relative, no leading slash), before `ownership` is asked:
    /// COPY --chown and the owners a copied tree keeps, whatever ids this host can represent.
    public var owners: [String: (uid: UInt32, gid: UInt32)] = [:]
    /// false: the tar is hashed (diffID, size) but its bytes are not kept — the caller keeps the
    /// directory it was packed from and records a `LayerRecipe` to pack it again (uncompressed
    /// layers only). The result's descriptor then names a blob the store can make on demand.
    public var storesBlob = true
    /// When set, the tar must hash to this (a layer packed again from its recipe): otherwise
    /// nothing is stored and `diffIDMismatch` is thrown.
    public var expectedDiffID: Digest?

    public init(compression: Compression = .gzip, level: Int? = nil, sourceDateEpoch: Int64? = LayerOptions.environmentEpoch) {
        self.compression = compression
        self.level = level
        self.sourceDateEpoch = sourceDateEpoch
        let uid = getuid(), gid = getgid()
        ownership = { u, g in (u == uid ? 0 : u, g == gid ? 0 : g) }
    }

    /// SOURCE_DATE_EPOCH from the environment, when it is a number.
    public static var environmentEpoch: Int64? {
        ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"].flatMap { Int64($0) }
    }
}

extension LayerOptions {
    /// Records host owners as the ids they are inside the sandbox (`mapping`); a host id the
    /// map lacks is recorded as 65534 (nobody), as the kernel shows it. A build's layers and
    /// their recipes (LayerRecipe) both pack through this, so a repack gives the same diffID.
    public mutating func mapOwners(through mapping: IDMapping) {
        ownership = { u, g in (mapping.insideID(host: u, uid: true) ?? 65534, mapping.insideID(host: g, uid: false) ?? 65534) }
    }
}

/// A layer blob written to the store.
public struct LayerResult: Sendable, Equatable {
    public var descriptor: Descriptor
    /// The digest of the uncompressed tar (the config's rootfs.diff_ids entry).
    public var diffID: Digest
    public var uncompressedSize: Int64
    /// Tar entries written (0: the layer changes nothing).
    public var entries: Int = 0
}

/// Where a TarWriter's bytes go.
package protocol TarSink: AnyObject {
    func write(_ data: UnsafeRawBufferPointer) throws
    var failure: Error? { get set }
}

/// Receives the tar stream from libarchive: hashes it (diffID), compresses it, and streams the
/// result into a blob (whose digest the blob writer computes) — all in one pass.
final class LayerSink: TarSink {
    let diff = SHA256()
    var uncompressed: Int64 = 0
    /// nil: hashing only (`LayerOptions.storesBlob` false).
    let blob: BlobWriter?
    let compression: Compression
    var zs = z_stream()
    var zstd: OpaquePointer?
    var out = [UInt8](repeating: 0, count: 1 << 17)
    var failure: Error?
    let level: Int?
    /// gzip is compressed in independent members of `chunkSize` bytes, several at once: one core's
    /// deflate would otherwise bound a layer's speed. Multi-member gzip is standard (RFC 1952 §2.2)
    /// and what Go's, zlib's and pigz's readers accept; the output depends only on the input.
    let parallelGzip: Bool
    static let chunkSize = 1 << 22
    var pending: [[UInt8]] = []
    var current: [UInt8] = []

    /// Always the parallel form for gzip, whatever the core count: a one-core machine must write
    /// the same bytes as a many-core one (reproducible digests).
    init(store: ContentStore, compression: Compression, level: Int?, storesBlob: Bool = true) throws {
        precondition(storesBlob || compression == .none, "only an uncompressed layer can be hashed without storing it")
        blob = storesBlob ? try BlobWriter(store: store) : nil
        // An uncompressed layer's blob digest is its diffID: hash the bytes once.
        blob?.hashing = compression != .none
        self.compression = compression
        self.level = level
        self.parallelGzip = compression == .gzip
        switch compression {
        case .gzip:
            // windowBits 15 + 16: a gzip wrapper (RFC 1952) around the deflate stream.
            let rc = deflateInit2_(&zs, Int32(level ?? 6), Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
            guard rc == Z_OK else { throw OCIError(.io, "zlib deflateInit2 failed (\(rc))") }
        case .zstd:
            zstd = ZSTD_createCCtx()
            ZSTD_CCtx_setParameter(zstd, ZSTD_c_compressionLevel, Int32(level ?? 3))
        case .none:
            break
        }
    }

    deinit {
        if compression == .gzip { deflateEnd(&zs) }
        if let zstd { ZSTD_freeCCtx(zstd) }
    }

    /// Also receives the uncompressed tar.
    var forward: ((UnsafeRawBufferPointer) throws -> Void)?

    func write(_ data: UnsafeRawBufferPointer) throws {
        diff.update(data)
        uncompressed += Int64(data.count)
        try forward?(data)
        if parallelGzip {
            var rest = data[...]
            while !rest.isEmpty {
                let take = min(rest.count, LayerSink.chunkSize - current.count)
                current.append(contentsOf: rest.prefix(take))
                rest = rest.dropFirst(take)
                if current.count == LayerSink.chunkSize {
                    pending.append(current)
                    current = []
                    current.reserveCapacity(LayerSink.chunkSize)
                    if pending.count >= 2 * ProcessInfo.processInfo.activeProcessorCount { try flushPending() }
                }
            }
            return
        }
        try compress(data, final: false)
    }

    /// Compresses the pending chunks concurrently, then writes the members in order.
    func flushPending() throws {
        guard !pending.isEmpty else { return }
        let chunks = pending
        pending = []
        let results = UnsafeMutableBufferPointer<[UInt8]>.allocate(capacity: chunks.count)
        results.initialize(repeating: [])
        defer { results.deinitialize(); results.deallocate() }
        let lvl = Int32(level ?? 6)
        // Each iteration writes only its own slot.
        nonisolated(unsafe) let slots = results
        DispatchQueue.concurrentPerform(iterations: chunks.count) { i in
            slots[i] = gzipMember(chunks[i], level: lvl)
        }
        for r in results {
            guard !r.isEmpty else { throw OCIError(.io, "gzip compression of a layer chunk failed") }
            try blob?.write(r)
        }
    }

    func compress(_ data: UnsafeRawBufferPointer, final: Bool) throws {
        switch compression {
        case .none:
            try blob?.write(data)
        case .gzip:
            zs.next_in = UnsafeMutablePointer(mutating: data.baseAddress?.assumingMemoryBound(to: UInt8.self))
            zs.avail_in = UInt32(data.count)
            repeat {
                let produced: Int = try out.withUnsafeMutableBytes { buf in
                    zs.next_out = buf.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    zs.avail_out = UInt32(buf.count)
                    let rc = deflate(&zs, final ? Z_FINISH : Z_NO_FLUSH)
                    guard rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR else {
                        throw OCIError(.io, "gzip compression failed (\(rc))")
                    }
                    return buf.count - Int(zs.avail_out)
                }
                if produced > 0 { try out.withUnsafeBytes { try blob?.write(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) } }
                if final && zs.avail_out != 0 && zs.avail_in == 0 { break }
            } while zs.avail_in > 0 || zs.avail_out == 0
        case .zstd:
            var input = ZSTD_inBuffer(src: data.baseAddress, size: data.count, pos: 0)
            var finished = false
            repeat {
                let produced: Int = try out.withUnsafeMutableBytes { buf in
                    var output = ZSTD_outBuffer(dst: buf.baseAddress, size: buf.count, pos: 0)
                    let rc = ZSTD_compressStream2(zstd, &output, &input, final ? ZSTD_e_end : ZSTD_e_continue)
                    if ZSTD_isError(rc) != 0 {
                        throw OCIError(.io, "zstd compression failed: \(String(cString: ZSTD_getErrorName(rc)))")
                    }
                    finished = !final || rc == 0
                    return output.pos
                }
                if produced > 0 { try out.withUnsafeBytes { try blob?.write(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) } }
            } while input.pos < input.size || !finished
        }
    }

    /// Ends the stream and stores the blob (unless hashing only); with `expectedDiffID`, a tar
    /// that hashes otherwise is refused before anything is stored.
    func finish(expectedDiffID: Digest? = nil, what: String = "layer") throws -> (Digest, Int64, Digest, Int64) {
        if parallelGzip {
            if !current.isEmpty || (pending.isEmpty && uncompressed == 0) { pending.append(current) }
            current = []
            try flushPending()
        } else {
            try compress(UnsafeRawBufferPointer(start: nil, count: 0), final: true)
        }
        let diffID = diff.finish()
        if let expectedDiffID, expectedDiffID != diffID {
            blob?.abort()
            throw OCIError(.diffIDMismatch, "\(what) packs to \(diffID), not its diff_id \(expectedDiffID)")
        }
        guard let blob else { return (diffID, uncompressed, diffID, uncompressed) }
        let (digest, size) = try blob.commit(expected: nil, known: compression == .none ? diffID : nil)
        return (digest, size, diffID, uncompressed)
    }
}

// libarchive's AE_IF* are cast expressions Swift cannot import; they are the stat(2) values.
let AE_IFREG: UInt32 = 0o100000
let AE_IFDIR: UInt32 = 0o040000
let AE_IFLNK: UInt32 = 0o120000
let AE_IFCHR: UInt32 = 0o020000
let AE_IFBLK: UInt32 = 0o060000
let AE_IFIFO: UInt32 = 0o010000

/// Writes tar entries with libarchive into a `TarSink` (a layer's, a file, a build context's
/// stream to a node); `what` names the tar in errors.
package final class TarWriter {
    package let a: OpaquePointer
    let sink: TarSink
    let what: String

    package init(sink: TarSink, what: String = "the layer") throws {
        self.sink = sink
        self.what = what
        a = archive_write_new()
        // PAX only when needed (long names, large ids, xattrs); plain ustar otherwise.
        archive_write_set_format_pax_restricted(a)
        // Hand the sink 1 MiB at a time (not tar's 10 KiB records): hashing, compressing and
        // writing then cost a call per megabyte. The last block is not padded.
        archive_write_set_bytes_per_block(a, 1 << 20)
        archive_write_set_bytes_in_last_block(a, 1)
        let rc = archive_write_open2(a, Unmanaged.passUnretained(sink as AnyObject).toOpaque(), nil, { _, client, buffer, length in
            let sink = Unmanaged<AnyObject>.fromOpaque(client!).takeUnretainedValue() as! TarSink
            do {
                try sink.write(UnsafeRawBufferPointer(start: buffer, count: length))
                return la_ssize_t(length)
            } catch {
                sink.failure = error
                return -1
            }
        }, nil, nil)
        guard rc == ARCHIVE_OK else { throw OCIError(.io, "libarchive: \(archiveError(a))") }
    }

    deinit { archive_write_free(a) }

    package func check(_ rc: Int32, _ what: String) throws {
        if rc < ARCHIVE_WARN {
            if let f = sink.failure { throw f }
            throw OCIError(.io, "writing \(self.what) failed at \(what): \(archiveError(a))")
        }
    }

    package func header(_ e: OpaquePointer, _ what: String) throws {
        try check(archive_write_header(a, e), what)
    }

    package func data(_ bytes: UnsafeRawBufferPointer, _ what: String) throws {
        var off = 0
        while off < bytes.count {
            let n = archive_write_data(a, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 { try check(Int32(n), what) }
            off += n
        }
    }

    package func close() throws {
        try check(archive_write_close(a), "end of archive")
    }
}

/// Packs a directory tree into a layer: entries sorted by path, ownership mapped, times clamped
/// to SOURCE_DATE_EPOCH, hard links, symlinks, device nodes and xattrs (security.capability and
/// user.*) kept. The tree is walked with openat/fstatat and never follows a symlink.
///
/// Without `base`, the tree is an overlay upper directory (kernel overlayfs or fuse-overlayfs):
/// 0/0 character devices are deletions and opaque marks hide lower layers. With `base`, the tree
/// is a full root and the layer holds only what differs from `base` (another full root): new
/// and changed entries, with their parent directories, and a `.wh.NAME` for each name `base`
/// has and the tree lacks. Entries compare by type, mode, owner, size, mtime, device and link
/// target; a regular file whose mtime has no nanoseconds (restored by a tool) is also compared
/// byte by byte.
public func writeLayer(fromDirectory root: String, base: String? = nil, store: ContentStore,
                       options: LayerOptions = LayerOptions()) throws -> LayerResult {
    try packDirectory(root, base: base, store: store, options: options, forward: nil)
}

/// `writeLayer`, the uncompressed tar also handed to `forward` as it is made (a layer packed
/// from its recipe straight into an export).
func packDirectory(_ root: String, base: String?, store: ContentStore, options: LayerOptions,
                   forward: ((UnsafeRawBufferPointer) throws -> Void)?) throws -> LayerResult {
    let rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard rootfd >= 0 else {
        throw OCIError(.notFound, "cannot open directory \(root): \(String(cString: strerror(errno)))")
    }
    defer { close(rootfd) }
    var basefd: Int32 = -1
    if let base {
        basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard basefd >= 0 else {
            throw OCIError(.notFound, "cannot open directory \(base): \(String(cString: strerror(errno)))")
        }
    }
    defer { if basefd >= 0 { close(basefd) } }
    /// Directories of a diff whose header waits until something below them changes.
    var pendingDirs: [(rel: String, st: stat)] = []
    let sink = try LayerSink(store: store, compression: options.compression, level: options.level, storesBlob: options.storesBlob)
    sink.forward = forward
    let tar = try TarWriter(sink: sink)
    var links: [String: String] = [:]   // "dev:ino" → first path
    var buf = [UInt8](repeating: 0, count: 1 << 20)
    var entries = 0

    func whiteout(rel: String, name: String, marker: String?, mtime: Int) throws {
        let e = archive_entry_new()!
        defer { archive_entry_free(e) }
        var path = rel
        if let marker {
            let parent = rel.dropLast(name.count)
            path = String(parent) + marker
        }
        archive_entry_set_pathname(e, path)
        archive_entry_set_filetype(e, AE_IFREG)
        archive_entry_set_perm(e, 0)
        archive_entry_set_size(e, 0)
        var t = Int64(mtime)
        if let epoch = options.sourceDateEpoch, t > epoch { t = epoch }
        archive_entry_set_mtime(e, time_t(t), 0)
        try header(e, path)
    }

    /// A tar header, after those of the pending parent directories.
    func header(_ e: OpaquePointer, _ path: String) throws {
        try flushPending()
        try tar.header(e, path)
        entries += 1
    }

    func flushPending() throws {
        if pendingDirs.isEmpty { return }
        let dirs = pendingDirs
        pendingDirs = []
        for d in dirs { try directoryHeader(rel: d.rel, st: d.st) }
    }

    func fill(_ e: OpaquePointer, rel: String, st: stat) {
        archive_entry_set_pathname(e, (st.st_mode & S_IFMT) == S_IFDIR ? rel + "/" : rel)
        archive_entry_set_perm(e, st.st_mode & 0o7777)
        let (uid, gid) = options.owners[rel] ?? options.ownership(st.st_uid, st.st_gid)
        archive_entry_set_uid(e, la_int64_t(uid))
        archive_entry_set_gid(e, la_int64_t(gid))
        var mtime = Int64(st.st_mtim.tv_sec)
        if let epoch = options.sourceDateEpoch, mtime > epoch { mtime = epoch }
        archive_entry_set_mtime(e, time_t(mtime), 0)
    }

    func directoryHeader(rel: String, st: stat) throws {
        let e = archive_entry_new()!
        defer { archive_entry_free(e) }
        fill(e, rel: rel, st: st)
        addXattrs(e, layerXattrs(path: root + "/" + rel))
        archive_entry_set_filetype(e, AE_IFDIR)
        try tar.header(e, rel)
        entries += 1
        // An overlay directory marked opaque hides everything below it in lower layers.
        if basefd < 0 && isOpaque(root + "/" + rel) {
            try whiteout(rel: rel + "/.wh..wh..opq", name: ".wh..wh..opq", marker: nil, mtime: st.st_mtim.tv_sec)
        }
    }

    /// Writes one entry; says whether it was a directory (to descend into). With a base, an
    /// entry equal to the base's is skipped, and a directory's header waits for a change below.
    func emit(dirfd: Int32, name: String, rel: String, baseDir: Int32) throws -> Bool {
        var st = stat()
        guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw OCIError(.io, "cannot stat \(root)/\(rel): \(String(cString: strerror(errno)))")
        }
        let type = st.st_mode & S_IFMT
        if type == S_IFSOCK { return false }   // sockets cannot be represented in a layer
        if basefd < 0 {
            // overlayfs records a deletion as a 0/0 character device: in an OCI layer that is an
            // empty `.wh.NAME` beside it (image-spec, "Whiteouts").
            if type == S_IFCHR && st.st_rdev == 0 {
                if name.hasPrefix(".wh.") { return false }   // fuse-overlayfs's own marker
                try whiteout(rel: rel, name: name, marker: ".wh." + name, mtime: st.st_mtim.tv_sec)
                return false
            }
            // fuse-overlayfs marks an opaque directory with this file too (and an xattr).
            if name == ".wh..wh..opq" { return false }
        }
        var unchanged = false
        if baseDir >= 0 {
            var old = stat()
            if fstatat(baseDir, name, &old, AT_SYMLINK_NOFOLLOW) == 0, (old.st_mode & S_IFMT) == type {
                if type == S_IFDIR {
                    unchanged = sameMetadata(st, old)   // then emitted only if something below changed
                } else if sameMetadata(st, old) && st.st_size == old.st_size && st.st_rdev == old.st_rdev
                            && (type != S_IFLNK || linkTargetBytes(dirfd, name) == linkTargetBytes(baseDir, name))
                            && (type != S_IFREG || st.st_mtim.tv_nsec != 0 || sameBytes(dirfd, baseDir, name)) {
                    return false
                }
            }
        }
        if type == S_IFDIR {
            pendingDirs.append((rel, st))
            if !unchanged { try flushPending() }
            return true
        }
        let e = archive_entry_new()!
        defer { archive_entry_free(e) }
        fill(e, rel: rel, st: st)
        let key = "\(st.st_dev):\(st.st_ino)"
        switch type {
        case S_IFREG:
            if st.st_nlink > 1, let first = links[key] {
                archive_entry_set_filetype(e, AE_IFREG)
                archive_entry_set_hardlink(e, first)
                archive_entry_set_size(e, 0)
                try header(e, rel)
                return false
            }
            if st.st_nlink > 1 { links[key] = rel }
            let fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw OCIError(.io, "cannot open \(root)/\(rel): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            addXattrs(e, layerXattrs(fd: fd))
            archive_entry_set_filetype(e, AE_IFREG)
            archive_entry_set_size(e, la_int64_t(st.st_size))
            try header(e, rel)
            var left = Int64(st.st_size)
            while left > 0 {
                let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, Int(left))) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw OCIError(.io, "\(root)/\(rel) changed while it was being packed (short read)") }
                try buf.withUnsafeBytes { try tar.data(UnsafeRawBufferPointer(rebasing: $0[0..<n]), rel) }
                left -= Int64(n)
            }
        case S_IFLNK:
            guard let target = linkTargetBytes(dirfd, name) else { throw OCIError(.io, "cannot read symlink \(root)/\(rel)") }
            archive_entry_set_filetype(e, AE_IFLNK)
            target.withUnsafeBufferPointer { archive_entry_set_symlink(e, $0.baseAddress) }
            try header(e, rel)
        case S_IFCHR, S_IFBLK:
            archive_entry_set_filetype(e, type == S_IFCHR ? AE_IFCHR : AE_IFBLK)
            archive_entry_set_rdev(e, st.st_rdev)
            try header(e, rel)
        case S_IFIFO:
            archive_entry_set_filetype(e, AE_IFIFO)
            try header(e, rel)
        default:
            return false
        }
        return false
    }

    func walk(dirfd: Int32, prefix: String, baseDir: Int32) throws {
        let names = try sortedNames(dirfd)
        if baseDir >= 0 {
            // Names the base has and this tree lacks: deletions.
            let present = Set(names)
            for name in try sortedNames(baseDir) where !present.contains(name) {
                let rel = prefix.isEmpty ? name : prefix + "/" + name
                try whiteout(rel: rel, name: name, marker: ".wh." + name, mtime: 0)
            }
        }
        for name in names {
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            let depth = pendingDirs.count
            if try emit(dirfd: dirfd, name: name, rel: rel, baseDir: baseDir) {
                let sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw OCIError(.io, "cannot open directory \(root)/\(rel): \(String(cString: strerror(errno)))") }
                defer { close(sub) }
                // The base's directory of the same name, when it is one (else all is new).
                let subBase = baseDir >= 0 ? openat(baseDir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1
                defer { if subBase >= 0 { close(subBase) } }
                try walk(dirfd: sub, prefix: rel, baseDir: subBase)
                // Nothing below it changed: drop its pending header.
                if pendingDirs.count > depth { pendingDirs.removeLast(pendingDirs.count - depth) }
            }
        }
    }

    try walk(dirfd: rootfd, prefix: "", baseDir: basefd)
    try tar.close()
    let (digest, size, diffID, usize) = try sink.finish(expectedDiffID: options.expectedDiffID, what: "the layer in \(root)")
    return LayerResult(descriptor: Descriptor(mediaType: options.compression.mediaType, digest: digest, size: size),
                       diffID: diffID, uncompressedSize: usize, entries: entries)
}

/// Same type, mode, owner and mtime (to the nanosecond).
func sameMetadata(_ a: stat, _ b: stat) -> Bool {
    a.st_mode == b.st_mode && a.st_uid == b.st_uid && a.st_gid == b.st_gid
        && a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec
}

/// Whether two regular files of the same size hold the same bytes.
func sameBytes(_ dirA: Int32, _ dirB: Int32, _ name: String) -> Bool {
    let a = openat(dirA, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    let b = openat(dirB, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    defer { if a >= 0 { close(a) }; if b >= 0 { close(b) } }
    guard a >= 0, b >= 0 else { return false }
    var x = [UInt8](repeating: 0, count: 1 << 16), y = x
    while true {
        let n = read(a, &x, x.count), m = read(b, &y, y.count)
        if n != m || n < 0 { return false }
        if n == 0 { return true }
        if memcmp(x, y, n) != 0 { return false }
    }
}

func addXattrs(_ e: OpaquePointer, _ xattrs: [(name: String, value: [UInt8])]) {
    for x in xattrs { archive_entry_xattr_add_entry(e, x.name, x.value, x.value.count) }
}

/// One complete gzip member holding `data`.
func gzipMember(_ data: [UInt8], level: Int32) -> [UInt8] {
    var zs = z_stream()
    guard deflateInit2_(&zs, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return [] }
    defer { deflateEnd(&zs) }
    var out = [UInt8](repeating: 0, count: Int(deflateBound(&zs, UInt(data.count))) + 64)
    let produced: Int = data.withUnsafeBytes { inBuf in
        out.withUnsafeMutableBytes { outBuf in
            zs.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress?.assumingMemoryBound(to: UInt8.self))
            zs.avail_in = UInt32(inBuf.count)
            zs.next_out = outBuf.baseAddress!.assumingMemoryBound(to: UInt8.self)
            zs.avail_out = UInt32(outBuf.count)
            guard deflate(&zs, Z_FINISH) == Z_STREAM_END else { return -1 }
            return outBuf.count - Int(zs.avail_out)
        }
    }
    guard produced >= 0 else { return [] }
    out.removeSubrange(produced...)
    return out
}

/// overlayfs's opaque-directory mark (user.* in a user namespace, trusted.* otherwise).
/// fuse-overlayfs uses its own xattr, and also leaves a `.wh..wh..opq` file in the directory.
func isOpaque(_ path: String) -> Bool {
    for name in ["user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque"] {
        var v: UInt8 = 0
        if lgetxattr(path, name, &v, 1) == 1 && v == UInt8(ascii: "y") { return true }
    }
    return access(path + "/.wh..wh..opq", F_OK) == 0
}

/// The layer `layer` (uncompressed, gzip or zstd) compressed with `compression`: the same tar,
/// so the same diffID. Returns `layer` itself when it is already compressed so.
public func recompressLayer(_ layer: Descriptor, to compression: Compression, level: Int?, store: ContentStore) throws -> Descriptor {
    let same = layer.mediaType == compression.mediaType
        || (compression == .gzip && layer.mediaType == MediaType.dockerLayerGzip)
    if same { return layer }
    if layer.mediaType == MediaType.ociLayer, let recipe = store.packableRecipe(layer.digest) {
        // Kept as a snapshot directory: packed and compressed in one pass, the plain tar never
        // stored (`LayerRecipe`).
        let r = try store.pack(layer.digest, recipe: recipe, compression: compression, level: level)
        return r.descriptor
    }
    let sink = try LayerSink(store: store, compression: compression, level: level)
    try decompressLayer(store.blob(layer)) { try sink.write($0) }
    let (digest, size, _, _) = try sink.finish()
    return Descriptor(mediaType: compression.mediaType, digest: digest, size: size)
}
