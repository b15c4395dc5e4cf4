import Foundation
import RBuildSystem

/// A blob on disk and what it must be: the digest and size every reader checks as the bytes
/// stream past (the content store never trusts its own files: a disk, a crash or another tool
/// may have changed them since they were verified on the way in).
public struct StoredBlob: Sendable {
    public var path: String
    /// nil: a file that is not content-addressed (a build context's tarball): read unchecked.
    public var digest: Digest?
    public var size: Int64?
    /// Where the blob lives (the content store's root): for messages, and for a reader to pack a
    /// layer kept only as its snapshot (`LayerRecipe`) when its file is missing.
    public var store: String?

    public init(path: String, digest: Digest? = nil, size: Int64? = nil, store: String? = nil) {
        self.path = path
        self.digest = digest
        self.size = size
        self.store = store
    }
}

extension ContentStore {
    /// The blob `d` (of `size` bytes when known) as readers see it.
    public func blob(_ d: Digest, size: Int64? = nil) -> StoredBlob {
        StoredBlob(path: path(d), digest: d, size: size, store: root)
    }

    public func blob(_ d: Descriptor) -> StoredBlob { blob(d.digest, size: d.size) }

    /// The document `d` names (a manifest, an index, a config), checked against its digest and
    /// the size the descriptor gives.
    public func read(_ d: Descriptor) throws -> [UInt8] { try read(d.digest, size: d.size) }
}

extension OCIError {
    static let repairHint = "run `rbuild check --repair`, then pull, import or build the image again"

    /// A blob whose bytes are not what its name says.
    static func corrupt(_ d: Digest, store: String?, _ what: String) -> OCIError {
        OCIError(.corruptBlob, "blob \(d)\(store.map { " in \($0)" } ?? "") is corrupt (\(what)): \(repairHint)")
    }

    /// A blob an image names that the store does not have (removed by `check --repair`).
    static func missing(_ d: Digest, store: String?) -> OCIError {
        OCIError(.missingBlob, "blob \(d) is missing from the content store\(store.map { " \($0)" } ?? ""): the image is incomplete; pull, import or build it again")
    }

    /// The same error, its message prefixed with what was being done (an image, a step).
    public func context(_ what: String) -> OCIError {
        OCIError(code, what + ": " + message)
    }
}

/// `body`, a corrupt or missing blob in it reported with `what` was being done ("cannot save
/// NAME"): the blob's digest alone does not tell a user which image to fetch again.
public func namingBlobErrors<T>(_ what: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as OCIError where e.code == .corruptBlob || e.code == .missingBlob {
        throw e.context(what())
    }
}

/// Reads a blob and checks it as it goes: the size against the file's at open (a truncated or
/// extended blob fails before a byte is handed out) and the sha256 of every byte read, compared
/// the moment the last expected byte is read — so a consumer that sends bytes on (an upload)
/// never sends the end of a corrupt blob, and one that writes files (an unpack) learns it
/// before it commits anything.
public final class BlobReader {
    public let blob: StoredBlob
    let fd: Int32
    let hasher = SHA256()
    /// Bytes handed out so far.
    public private(set) var count: Int64 = 0
    /// The file's size when opened.
    public let fileSize: Int64
    /// What the bytes hashed to, once all were read.
    public private(set) var actual: Digest?
    var checked = false

    public init(_ blob: StoredBlob) throws {
        self.blob = blob
        var fd = open(blob.path, O_RDONLY | O_CLOEXEC)
        if fd < 0 && errno == ENOENT, let d = blob.digest, let root = blob.store,
           try ContentStore(root: root).materialise(d) {
            // A layer kept as a snapshot directory (`LayerRecipe`): its plain blob is written
            // now, for a reader that wants those bytes (an uncompressed export, another
            // snapshotter unpacking it).
            fd = open(blob.path, O_RDONLY | O_CLOEXEC)
        }
        self.fd = fd
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT, let d = blob.digest { throw OCIError.missing(d, store: blob.store) }
            throw OCIError(.io, "cannot open \(blob.path): \(String(cString: strerror(e)))")
        }
        var st = stat()
        fstat(fd, &st)
        fileSize = Int64(st.st_size)
        if let d = blob.digest, let size = blob.size, size != fileSize {
            // Every stored property is set: the throw runs deinit, which closes `fd` (closing it
            // here too closed it twice, and the second time some other thread's new file).
            throw OCIError.corrupt(d, store: blob.store, "it has \(fileSize) bytes, expected \(size)")
        }
    }

    deinit { close(fd) }

    /// Up to `buffer.count` bytes; 0 at the end. Throws `corruptBlob` when the blob's bytes do
    /// not hash to its digest (on the read that completes it).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var n: Int
        repeat { n = Foundation.read(fd, buffer.baseAddress, buffer.count) } while n < 0 && errno == EINTR
        guard n >= 0 else {
            let e = errno
            throw OCIError(.io, "reading \(blob.digest.map(\.description) ?? blob.path) failed: \(String(cString: strerror(e)))")
        }
        hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        count += Int64(n)
        if n == 0 || count >= (blob.size ?? fileSize) { try check(atEnd: n == 0) }
        return n
    }

    /// Streams the whole blob to `body`, then checks it (the last chunk is checked before
    /// `body` sees it).
    public func forEach(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try read(into: buf)
            if n == 0 { break }
            try body(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        try finish()
    }

    /// Reads what is left (what a consumer stopped short of: a tar's padding, a gzip trailer)
    /// and checks the whole blob.
    public func finish() throws {
        guard !checked else { return }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buf.deallocate() }
        while try read(into: buf) > 0 {}
    }

    /// The digest check, once every byte has been read.
    func check(atEnd: Bool) throws {
        guard let d = blob.digest else { return }
        if checked {
            // Bytes past the verified end: the file grew while it was read.
            guard count == blob.size ?? fileSize else {
                throw OCIError.corrupt(d, store: blob.store, "it has more than the \(blob.size ?? fileSize) bytes it should have")
            }
            return
        }
        if !atEnd, count < blob.size ?? fileSize { return }
        checked = true
        if let size = blob.size, count != size {
            throw OCIError.corrupt(d, store: blob.store, "it has \(count) bytes, expected \(size)")
        }
        let got = hasher.finish()
        actual = got
        guard got == d else { throw OCIError.corrupt(d, store: blob.store, "its bytes hash to \(got), \(count) bytes") }
    }
}

extension ContentStore {
    /// Copies a blob to `path` as a new file — a reflink where the filesystem can, else an
    /// in-kernel copy — and checks the copy's bytes; the file appears (temp file + rename) only
    /// once it is whole and verified.
    public func copy(_ blob: StoredBlob, to path: String) throws {
        let source = try BlobReader(blob)   // open, size checked
        try replaceAtomically(path, isDirectory: false) { tmp in
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw OCIError(.io, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var canClone = true
            guard copyContents(source.fd, fd, size: Int(source.fileSize), canClone: &canClone) else {
                throw OCIError(.io, "cannot write \(path): \(String(cString: strerror(errno)))\(errno == ENOSPC ? " (disk full: free space or run `rbuild prune`)" : "")")
            }
            var written = blob
            written.path = tmp
            try BlobReader(written).finish()
        }
    }
}

/// Makes `final` by way of a temporary sibling that `body` fills: `final` appears whole or not
/// at all (a directory that exists is replaced), and a failure removes the temporary.
public func replaceAtomically(_ final: String, isDirectory: Bool, _ body: (String) throws -> Void) throws {
    let parent = (final as NSString).deletingLastPathComponent
    let base = (final as NSString).lastPathComponent
    let tmp = (parent.isEmpty ? "." : parent) + "/.\(base).rbuild-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    do {
        try body(tmp)
        if isDirectory, access(final, F_OK) == 0 {
            try FileManager.default.removeItem(atPath: final)
        }
        guard rename(tmp, final) == 0 else {
            throw OCIError(.io, "cannot move the output into \(final): \(String(cString: strerror(errno)))")
        }
    } catch {
        try? FileManager.default.removeItem(atPath: tmp)
        throw error
    }
}

/// Writes all of `bytes` to `fd` (retrying short writes and EINTR).
func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: String) throws {
    do {
        try writeAll(fd, bytes)
    } catch let e as SystemError {
        throw OCIError(.io, "cannot write \(what): \(e.text)\(e.errno == ENOSPC ? " (disk full: free space or run `rbuild prune`)" : "")")
    }
}
