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
        /// The line of the entry being hashed, its storage reused (see `entry`).
        var line = [UInt8]()
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
        if st.known == nil { st.known = (try? index?.fileDigests(under: root)) ?? [:] }
        let h = SHA256()
        let parent = rel.isEmpty ? root : root + "/" + (pathComponents(rel).dropLast().joined(separator: "/"))
        let dirfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirfd >= 0 else { throw SolveError("cannot open \(parent): \(String(cString: strerror(errno)))") }
        defer { close(dirfd) }
        if rel.isEmpty {
            try walk(dirfd, prefix: "", include: include, into: h, &st)
        } else {
            let name = String(pathComponents(rel).last!)
            try entry(dirfd, name: name, rel: rel, include: include, into: h, &st)
        }
        return h.finish()
    }

    private func entry(_ dirfd: Int32, name: String, rel: String, include: ((String) -> Bool)?, into h: SHA256,
                       _ state: inout State) throws {
        var st = stat()
        guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
            throw SolveError("cannot stat \(root)/\(rel): \(String(cString: strerror(errno)))")
        }
        let type = st.st_mode & S_IFMT
        // Not the mtime: a fresh clone or a `touch` must not miss the cache (BuildKit's rule; the
        // layer made first keeps the mtimes it was made with).
        // The line is "rel NUL mode NUL [size NUL hex | link target] LF", written as bytes into one
        // buffer kept across entries: building it as an interpolated String cost more per file
        // than the stat (a warm rebuild of 10,000 files spends its time here).
        var line = state.line
        state.line = []
        defer { state.line = line }
        line.removeAll(keepingCapacity: true)
        line.append(contentsOf: rel.utf8)
        line.append(0)
        line.append(contentsOf: String(st.st_mode).utf8)
        line.append(0)
        switch type {
        case S_IFREG:
            line.append(contentsOf: String(st.st_size).utf8)
            line.append(0)
            line.append(contentsOf: try fileDigest(dirfd, name, rel: rel, st: st, &state).hex.utf8)
        case S_IFLNK:
            line.append(contentsOf: (linkTarget(dirfd, name) ?? "").utf8)
        default:
            break
        }
        line.append(0x0A)
        h.update(line)
        if type == S_IFDIR {
            let sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard sub >= 0 else { throw SolveError("cannot open \(root)/\(rel): \(String(cString: strerror(errno)))") }
            defer { close(sub) }
            try walk(sub, prefix: rel, include: include, into: h, &state)
        }
    }

    private func walk(_ dirfd: Int32, prefix: String, include: ((String) -> Bool)?, into h: SHA256, _ state: inout State) throws {
        for name in try sortedNames(dirfd) {
            let rel = prefix.isEmpty ? name : prefix + "/" + name
            if let include, !include(rel) { continue }
            try entry(dirfd, name: name, rel: rel, include: include, into: h, &state)
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
