import Foundation
import RBuildSystem
import RBuildOCI
import Synchronization

/// Content digests of build-context files for cache keys. Each file's sha256 is remembered in
/// the cache index with its identity (device, inode, size, mtime and ctime to the nanosecond),
/// so a warm build reads no unchanged file. A file whose ctime is within 100 ms of the build's
/// start (many clock ticks) is hashed but not remembered: a write in the same tick as the hash
/// could otherwise leave the same identity over different bytes (moby/buildkit#4950).
public final class ContextHasher: Sendable {
    public let root: String
    let index: CacheIndex?
    private let started = Date().timeIntervalSince1970

    /// What the hasher has learnt; one digest computation at a time holds it.
    struct State {
        var known: [CacheIndex.FileIdentity: Digest]?
        var fresh: [(path: String, identity: CacheIndex.FileIdentity, digest: Digest)] = []
        var filesRead = 0
        /// The read buffer, made once: zeroing a new 256 KiB per file cost more than hashing
        /// most context files (2,000 small files: 55 ms → see scripts/bench/cache).
        var buffer = [UInt8]()
    }
    private let state = Mutex(State())

    /// Files read (not found in the index) so far: what a warm build should keep at zero.
    public var filesRead: Int { state.withLock { $0.filesRead } }

    public init(root: String, index: CacheIndex?) {
        self.root = root
        self.index = index
    }

    /// The digest of the context entry at `rel` (a canonical path inside the context; "" for
    /// its root) and, for a directory, of everything below it that `include` keeps (asked with
    /// paths relative to the context root). Names, types, modes, sizes, link targets and file
    /// bytes count; owners and mtimes do not.
    public func digest(of rel: String, include: ((String) -> Bool)? = nil) throws -> Digest {
        try state.withLock { st in try digest(of: rel, include: include, &st) }
    }

    private func digest(of rel: String, include: ((String) -> Bool)?, _ st: inout State) throws -> Digest {
        let h = SHA256()
        let parent = rel.isEmpty ? root : root + "/" + (pathComponents(rel).dropLast().joined(separator: "/"))
        let fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SolveError("cannot open \(parent): \(String(cString: strerror(errno)))") }
        let dir = FileDescriptor(owning: fd)
        let name = rel.isEmpty ? nil : String(pathComponents(rel).last!)
        if let name {
            var top = stat()
            guard fstatat(dir.rawValue, name, &top, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw SolveError("cannot stat \(root)/\(rel): \(String(cString: strerror(errno)))")
            }
            if top.st_mode & S_IFMT != S_IFDIR {
                // One file (or link): no walk to overlap with.
                if st.known == nil { st.known = (try? index?.fileDigests(under: root)) ?? [:] }
                var one = Batch()
                one.add(rel: rel, st: top, dir: dir, name: name)
                try hash(one, into: h, &st)
                return h.finish()
            }
        }
        // A directory: a walker thread reads the directories, stats every entry and writes the
        // lines, while this thread loads the remembered digests, then fills in each file's digest
        // and hashes the lines in the walker's order. A warm rebuild of 10,000 files is about these
        // two halves, so on two cores it takes about the longer of them instead of their sum.
        let walker = Walker(root: root, dir: dir, name: name, rel: rel, include: include)
        let thread = Thread { walker.run() }
        thread.stackSize = 8 << 20   // a few frames per directory level, as deep as PATH_MAX allows
        thread.start()
        defer { walker.cancel(); walker.waitUntilDone() }
        if st.known == nil { st.known = (try? index?.fileDigests(under: root)) ?? [:] }
        while let batch = try walker.next() { try hash(batch, into: h, &st) }
        return h.finish()
    }

    /// Entries in walk order as their lines, "rel NUL mode NUL [size NUL digest | link target] LF",
    /// with the place of each regular file's digest left open (`files`). Not the mtime: a fresh
    /// clone or a `touch` must not miss the cache (BuildKit's rule; the layer made first keeps the
    /// mtimes it was made with). Bytes, not interpolated Strings: those cost more per file than the
    /// stat.
    struct Batch: @unchecked Sendable {
        var bytes: [UInt8] = []
        var files: [File] = []
        var count = 0
        /// The directories `files` keep open (each counted once per run of its files).
        var dirs = 0

        /// A regular file whose digest goes at `at`; `dir` is its parent, kept open in case the
        /// file has to be read.
        struct File {
            var at: Int
            var dir: FileDescriptor
            var name: String
            var rel: String
            var st: stat
        }

        mutating func add(rel: String, st: stat, dir: FileDescriptor, name: String) {
            bytes.append(contentsOf: rel.utf8)
            bytes.append(0)
            bytes.append(contentsOf: String(st.st_mode).utf8)
            bytes.append(0)
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                bytes.append(contentsOf: String(st.st_size).utf8)
                bytes.append(0)
                if files.last?.dir !== dir { dirs += 1 }
                files.append(File(at: bytes.count, dir: dir, name: name, rel: rel, st: st))
            case S_IFLNK:
                bytes.append(contentsOf: (linkTarget(dir.rawValue, name) ?? "").utf8)
            default:
                break
            }
            bytes.append(0x0A)
            count += 1
        }
    }

    /// Hashes `batch`'s lines with each file's digest filled in.
    private func hash(_ batch: Batch, into h: SHA256, _ state: inout State) throws {
        try batch.bytes.withUnsafeBytes { all in
            var pos = 0
            for f in batch.files {
                h.update(UnsafeRawBufferPointer(rebasing: all[pos..<f.at]))
                var hex = try fileDigest(f.dir.rawValue, f.name, rel: f.rel, st: f.st, &state).hex
                hex.withUTF8 { h.update(UnsafeRawBufferPointer($0)) }
                pos = f.at
            }
            h.update(UnsafeRawBufferPointer(rebasing: all[pos...]))
        }
    }

    /// The walk of a directory in the order its lines are hashed (sorted names, depth first),
    /// handed over in batches through a bounded queue: at most `limit` entries and `openLimit`
    /// directories kept open for their files wait, so neither memory nor open descriptors grow
    /// with the context.
    final class Walker: @unchecked Sendable {
        let root: String
        let include: ((String) -> Bool)?
        private let start: (dir: FileDescriptor, name: String?, rel: String)
        private let cond = NSCondition()
        private var queue: [Batch] = []
        private var queued = 0
        private var queuedDirs = 0
        private var finished = false
        private var cancelled = false
        private var failure: Error?
        private var pending = Batch()
        static let limit = 4096
        static let batch = 512
        static let openLimit = 128
        static let batchOpen = 32

        /// A walk of `dir`'s entry `name` (at `rel`) and below it, or of all of `dir` when `name` is nil.
        init(root: String, dir: FileDescriptor, name: String?, rel: String, include: ((String) -> Bool)?) {
            self.root = root
            self.include = include
            start = (dir, name, rel)
        }

        /// The walker thread's body.
        func run() {
            do {
                if let name = start.name {
                    try visit(start.dir, name: name, rel: start.rel)
                } else {
                    try children(start.dir, prefix: "")
                }
                try flush()
            } catch {
                cond.lock(); failure = failure ?? error; cond.unlock()
            }
            pending = Batch()   // its directories' descriptors, when the walk stopped early
            cond.lock(); finished = true; cond.broadcast(); cond.unlock()
        }

        private func visit(_ dir: FileDescriptor, name: String, rel: String) throws {
            var st = stat()
            guard fstatat(dir.rawValue, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw SolveError("cannot stat \(root)/\(rel): \(String(cString: strerror(errno)))")
            }
            pending.add(rel: rel, st: st, dir: dir, name: name)
            if pending.count >= Walker.batch || pending.dirs >= Walker.batchOpen { try flush() }
            if st.st_mode & S_IFMT == S_IFDIR {
                let sub = openat(dir.rawValue, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw SolveError("cannot open \(root)/\(rel): \(String(cString: strerror(errno)))") }
                try children(FileDescriptor(owning: sub), prefix: rel)
            }
        }

        private func children(_ dir: FileDescriptor, prefix: String) throws {
            for name in try sortedNames(dir.rawValue) {
                let rel = prefix.isEmpty ? name : prefix + "/" + name
                if let include, !include(rel) { continue }
                try visit(dir, name: name, rel: rel)
            }
        }

        /// Hands the pending entries over, waiting while the queue is full.
        private func flush() throws {
            guard pending.count > 0 else { return }
            cond.lock()
            defer { cond.unlock() }
            while (queued >= Walker.limit || queuedDirs >= Walker.openLimit) && !cancelled { cond.wait() }
            if cancelled { throw CancellationError() }
            queued += pending.count
            queuedDirs += pending.dirs
            queue.append(pending)
            pending = Batch()
            cond.broadcast()
        }

        /// The next batch in walk order, nil at the end; the walk's error, if it failed.
        func next() throws -> Batch? {
            cond.lock()
            defer { cond.unlock() }
            while queue.isEmpty && !finished { cond.wait() }
            // A failed walk fails the digest: what is still queued need not be hashed.
            if let failure { throw failure }
            guard !queue.isEmpty else { return nil }
            let b = queue.removeFirst()
            queued -= b.count
            queuedDirs -= b.dirs
            cond.broadcast()
            return b
        }

        /// Stops the walk early (the hashing side failed or finished).
        func cancel() {
            cond.lock()
            cancelled = true
            queue.removeAll()   // and with it the directories held open for their files
            cond.broadcast()
            cond.unlock()
        }

        func waitUntilDone() {
            cond.lock()
            while !finished { cond.wait() }
            cond.unlock()
        }
    }

    private func fileDigest(_ dirfd: Int32, _ name: String, rel: String, st: stat, _ state: inout State) throws -> Digest {
        let id = CacheIndex.FileIdentity(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino), size: Int64(st.st_size),
                                         mtime: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                                         ctime: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec))
        if let d = state.known?[id] { return d }
        let path = root + "/" + rel
        let fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw SolveError("cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let h = SHA256()
        if state.buffer.isEmpty { state.buffer = [UInt8](repeating: 0, count: 1 << 18) }
        try state.buffer.withUnsafeMutableBytes { buf in
            while true {
                let n = read(fd, buf.baseAddress, buf.count)
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw SolveError("cannot read \(path): \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                h.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            }
        }
        let d = h.finish()
        state.filesRead += 1
        if Double(st.st_ctim.tv_sec) + Double(st.st_ctim.tv_nsec) / 1e9 < started - 0.1 {
            state.fresh.append((path, id, d))
            state.known?[id] = d
        }
        return d
    }

    /// Writes the digests learnt in this build to the index.
    public func save() {
        let entries = state.withLock { st in
            defer { st.fresh = [] }
            return st.fresh
        }
        try? index?.rememberFiles(entries)
    }
}
