#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild

/// Whether a host path is a directory (following symlinks, as a bind mount does).
func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

func pathExists(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0
}

/// Reads a file of an image's root filesystem without ever leaving it: `path` is resolved with
/// openat2(RESOLVE_IN_ROOT), so `..` and symlinks (even absolute ones) stay inside `root`.
/// Returns nil when the file does not exist.
public func readFileInRoot(root: String, path: String, limit: Int = 4 << 20) throws -> [UInt8]? {
    let rootfd = open(root, Int32(RB_O_PATH) | O_DIRECTORY | O_CLOEXEC)
    guard rootfd >= 0 else {
        throw RuntimeError(.rootfsNotFound, "cannot open root filesystem \(root): \(errnoText(errno))")
    }
    defer { close(rootfd) }
    let fd = rb_open_in_root(rootfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY, 0)
    if fd == -ENOENT || fd == -ENOTDIR { return nil }
    guard fd >= 0 else {
        throw RuntimeError(.badUser, "cannot read \(path) in \(root): \(errnoText(-fd))")
    }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while out.count < limit {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw RuntimeError(.badUser, "cannot read \(path) in \(root): \(errnoText(errno))")
        }
        if n == 0 { break }
        out += buf[0..<n]
    }
    return out
}

/// Creates `path` (which must not exist) with `bytes`. Plain open/write: FileManager's atomic
/// writes leave TemporaryDirectory.* directories behind in the temp dir on Linux.
func writeNewFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) -> Int32? {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            let e = errno
            unlink(path)
            return e
        }
        done += n
    }
    return nil
}

/// openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `path` is looked up as if `rootfd` were
/// "/", so neither `..` nor a symlink (even an absolute one) can leave it. Returns fd or -errno.
public func openInRoot(_ rootfd: Int32, _ path: String, flags: Int32, mode: UInt32 = 0) -> Int32 {
    rb_open_in_root(rootfd, path, flags, Int32(mode))
}

/// O_PATH, which Swift cannot import from the glibc headers.
public let O_PATH_FLAG = Int32(RB_O_PATH)

/// mkdtemp(3) of `prefix` + "XXXXXX": a new private directory's path, or nil (errno set).
public func makeTemporaryDirectory(prefix: String) -> String? {
    var template = Array((prefix + "XXXXXX").utf8CString)
    return template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) }
}

/// `path` made absolute against the working directory. State and snapshot directories are kept
/// absolute: sandboxes, and the fuse-overlayfs they start, see them from another directory.
public func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buf, buf.count) != nil else { return path }
    return String(cString: buf) + "/" + path
}
