import CArchive
import Foundation
import RBuildOCI
import RBuildSystem

/// A build context as a tar stream, for a node: what .dockerignore lets through (a file it
/// excludes never leaves this machine), regular files, directories and symlinks with their
/// modes and times (ownership is not sent: COPY without --chown makes files root's anyway).
/// libarchive writes and reads the tar; the walk and the extraction are ours, fd-relative,
/// never following a symlink.
public enum ContextArchive {
    /// UTIME_OMIT (a macro Swift cannot import): leave that time as it is.
    static let utimeOmit = (1 << 30) - 2

    public struct Summary: Sendable {
        public var files = 0
        public var bytes: Int64 = 0
        public init() {}
    }

    final class Sink: TarSink {
        let body: (UnsafeRawBufferPointer) throws -> Void
        var failure: Error?
        init(_ body: @escaping (UnsafeRawBufferPointer) throws -> Void) { self.body = body }
        func write(_ data: UnsafeRawBufferPointer) throws { try body(data) }
    }

    /// Writes the tar of `directory` (filtered by `ignore`) to `write`, in pieces.
    public static func write(directory: String, ignore: DockerIgnore, to write: @escaping (UnsafeRawBufferPointer) throws -> Void) throws -> Summary {
        let rootfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootfd >= 0 else { throw NodeError("cannot open the build context \(directory): \(errnoText(errno))") }
        defer { close(rootfd) }
        let tar = try TarWriter(sink: Sink(write), what: "the build context's tar")
        var summary = Summary()
        var buf = [UInt8](repeating: 0, count: 1 << 20)

        func walk(_ dirfd: Int32, _ rel: String) throws {
            for name in try sortedNames(dirfd, path: directory + "/" + rel) {
                let path = rel.isEmpty ? name : rel + "/" + name
                var st = stat()
                guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                    throw NodeError("the build context: cannot stat \(path): \(errnoText(errno))")
                }
                let type = st.st_mode & S_IFMT
                if ignore.matches(path) {
                    if type == S_IFDIR && !ignore.canSkipDirectory(path) { try descend(dirfd, name, path, st, header: false) }
                    continue
                }
                switch type {
                case S_IFDIR: try descend(dirfd, name, path, st, header: true)
                case S_IFREG: try file(dirfd, name, path, st)
                case S_IFLNK:
                    guard let target = linkTarget(dirfd, name) else { continue }
                    try entry(path, st, type: 0o120000) { archive_entry_set_symlink($0, target) }
                default: continue   // sockets, fifos, devices: not context material
                }
            }
        }
        func descend(_ dirfd: Int32, _ name: String, _ path: String, _ st: stat, header: Bool) throws {
            if header { try entry(path, st, type: 0o040000) { _ in } }
            let fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw NodeError("the build context: cannot open \(path): \(errnoText(errno))") }
            defer { close(fd) }
            try walk(fd, path)
        }
        func entry(_ path: String, _ st: stat, type: UInt32, size: Int64 = 0, _ fill: (OpaquePointer) -> Void) throws {
            let e = archive_entry_new()!
            defer { archive_entry_free(e) }
            archive_entry_set_pathname(e, path)
            archive_entry_set_filetype(e, type)
            archive_entry_set_perm(e, st.st_mode & 0o7777)
            archive_entry_set_size(e, size)
            archive_entry_set_mtime(e, st.st_mtim.tv_sec, st.st_mtim.tv_nsec)
            fill(e)
            try tar.header(e, path)
        }
        func file(_ dirfd: Int32, _ name: String, _ path: String, _ st: stat) throws {
            let fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw NodeError("the build context: cannot read \(path): \(errnoText(errno))") }
            defer { close(fd) }
            try entry(path, st, type: 0o100000, size: Int64(st.st_size)) { _ in }
            var left = Int64(st.st_size)
            while left > 0 {
                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, min($0.count, Int(left))) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw NodeError("the build context: \(path) changed while it was read (\(n < 0 ? errnoText(errno) : "shorter"))") }
                try buf.withUnsafeBytes { try tar.data(UnsafeRawBufferPointer(rebasing: $0[0..<n]), path) }
                left -= Int64(n)
            }
            summary.files += 1
            summary.bytes += Int64(st.st_size)
        }

        try walk(rootfd, "")
        try tar.close()
        return summary
    }

    final class Source {
        let read: () throws -> [UInt8]?
        var current: [UInt8] = []
        var failure: Error?
        init(_ read: @escaping () throws -> [UInt8]?) { self.read = read }
    }

    /// Unpacks a context tar (pieces from `read`, nil at its end) into the empty directory `dir`:
    /// every name resolved inside `dir` (openat2 RESOLVE_IN_ROOT), `..` refused.
    public static func extract(into dir: String, read: @escaping () throws -> [UInt8]?) throws {
        let rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootfd >= 0 else { throw NodeError("cannot open \(dir): \(errnoText(errno))") }
        defer { close(rootfd) }
        let source = Source(read)
        let a = archive_read_new()!
        defer { archive_read_free(a) }
        archive_read_support_format_tar(a)
        let rc = archive_read_open(a, Unmanaged.passUnretained(source).toOpaque(), nil, { _, client, buffer in
            let s = Unmanaged<Source>.fromOpaque(client!).takeUnretainedValue()
            do {
                guard let next = try s.read() else { return 0 }
                s.current = next
                return s.current.withUnsafeBytes { b in
                    buffer!.pointee = b.baseAddress
                    return la_ssize_t(b.count)
                }
            } catch {
                s.failure = error   // the error thrown; libarchive's own says only that reading failed
                return -1
            }
        }, nil)
        func failure(_ what: String) -> Error {
            source.failure ?? NodeError("the build context's tar: \(what): \(String(cString: archive_error_string(a)))")
        }
        guard rc == ARCHIVE_OK else { throw failure("cannot be read") }
        var dirs: [(String, timespec)] = []
        var entry: OpaquePointer?
        while true {
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { break }
            guard r >= ARCHIVE_WARN, let e = entry else { throw failure("a header") }
            let raw = String(cString: archive_entry_pathname(e))
            // Split by bytes (pathComponents), not Characters: "/" then a combining mark is one
            // Character, which would let `../\u{301}x` through as a name.
            var parts = pathComponents(try safeEntryName(raw, archive: "the build context's tar"))
            guard let last = parts.popLast() else { continue }
            let name = String(last)
            let parentPath = parts.joined(separator: "/")
            let parent = parentPath.isEmpty ? fcntl(rootfd, F_DUPFD_CLOEXEC, 0) : openInRoot(rootfd, parentPath, flags: O_RDONLY | O_DIRECTORY)
            guard parent >= 0 else { throw NodeError("the build context's tar: \(raw): its directory cannot be opened (\(errnoText(-parent)))") }
            defer { close(parent) }
            let mode = mode_t(archive_entry_perm(e))
            let mtime = timespec(tv_sec: archive_entry_mtime(e), tv_nsec: archive_entry_mtime_nsec(e))
            switch archive_entry_filetype(e) {
            case 0o040000:
                guard mkdirat(parent, name, 0o700) == 0 || errno == EEXIST else { throw NodeError("the build context: mkdir \(raw): \(errnoText(errno))") }
                _ = fchmodat(parent, name, mode, 0)
                dirs.append((raw, mtime))
            case 0o120000:
                guard let target = archive_entry_symlink(e) else { continue }
                guard symlinkat(target, parent, name) == 0 else { throw NodeError("the build context: symlink \(raw): \(errnoText(errno))") }
                var times = [timespec(tv_sec: 0, tv_nsec: utimeOmit), mtime]
                _ = utimensat(parent, name, &times, AT_SYMLINK_NOFOLLOW)
            case 0o100000:
                let fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw NodeError("the build context: create \(raw): \(errnoText(errno))") }
                defer { close(fd) }
                var block: UnsafeRawPointer?
                var size = 0
                var offset: la_int64_t = 0
                while true {
                    let d = archive_read_data_block(a, &block, &size, &offset)
                    if d == ARCHIVE_EOF { break }
                    guard d >= ARCHIVE_WARN else { throw failure(raw) }
                    var off = 0
                    while off < size {
                        let w = pwrite(fd, block! + off, size - off, off_t(offset) + off_t(off))
                        if w < 0 && errno == EINTR { continue }
                        guard w > 0 else { throw NodeError("the build context: writing \(raw): \(errnoText(errno))") }
                        off += w
                    }
                }
                fchmod(fd, mode)
                var times = [timespec(tv_sec: 0, tv_nsec: utimeOmit), mtime]
                futimens(fd, &times)
            default:
                continue
            }
        }
        // Directory times last: their entries changed them.
        for (path, mtime) in dirs.reversed() {
            let fd = openInRoot(rootfd, path, flags: O_RDONLY | O_DIRECTORY)
            guard fd >= 0 else { continue }
            var times = [timespec(tv_sec: 0, tv_nsec: utimeOmit), mtime]
            futimens(fd, &times)
            close(fd)
        }
    }
}
