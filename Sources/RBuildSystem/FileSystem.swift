#if canImport(Glibc)
import Glibc
#endif
import CRBuildSys

/// Whether a host path is a directory (following symlinks, as a bind mount does).
package func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// Whether anything (even a dangling symlink) is at `path`.
package func pathExists(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0
}

/// The names of a `/`-separated path as the kernel sees them, empty ones left out. Split on the
/// `/` scalar: String's split works on Characters, and a `/` followed by a combining mark (a
/// name may start with one) is one Character, so `../\u{301}x` would be one name, not `..`
/// and another.
public func pathComponents<S: StringProtocol>(_ path: S) -> [Substring] {
    Substring(path).unicodeScalars.split(separator: "/").map { Substring($0) }
}

/// `path` made absolute against the working directory. State and snapshot directories are kept
/// absolute: sandboxes, and the fuse-overlayfs they start, see them from another directory.
public func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    guard getcwd(&buf, buf.count) != nil else { return path }
    return String(cString: buf) + "/" + path
}

/// O_PATH, which Swift cannot import from the glibc headers.
public let O_PATH_FLAG = Int32(RB_O_PATH)

/// openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `path` is looked up as if `rootfd` were
/// "/", so neither `..` nor a symlink (even an absolute one) can leave it. Returns fd or -errno.
public func openInRoot(_ rootfd: Int32, _ path: String, flags: Int32, mode: UInt32 = 0) -> Int32 {
    rb_open_in_root(rootfd, path, flags, Int32(mode))
}

/// Creates `path` (which must not exist) with `bytes`; nothing is left behind when writing
/// fails. Plain open/write: FileManager's atomic writes leave TemporaryDirectory.* directories
/// behind in the temp dir on Linux.
package func writeNewFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
    let fd = try FileDescriptor(path: path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: mode)
    do {
        try fd.writeAll(bytes)
    } catch {
        unlink(path)
        throw SystemError("write", path: path, errno: (error as? SystemError)?.errno ?? EIO)
    }
}

/// Copies a regular file's bytes: a reflink (FICLONE) while the filesystem allows one (the first
/// refusal turns `canClone` off), else copy_file_range. On failure errno says why.
package func copyContents(_ fi: Int32, _ fo: Int32, size: Int, canClone: inout Bool) -> Bool {
    if canClone && rb_ficlone(fo, fi) == 0 { return true }
    canClone = false
    var left = size
    while left > 0 {
        let n = rb_copy_file_range(fi, fo, left)
        if n == -Int(EINTR) { continue }
        // Between two filesystems (a CI job's context volume and a state dir on the container's
        // overlayfs) the kernel refuses (EXDEV, or EOPNOTSUPP/EINVAL from some filesystems):
        // plain reads and writes then, from where it stopped.
        if n < 0, [EXDEV, EOPNOTSUPP, EINVAL, ENOSYS].contains(Int32(-n)) { return copyByReading(fi, fo, left: left) }
        guard n > 0 else { errno = n < 0 ? Int32(-n) : EIO; return false }
        left -= n
    }
    return true
}

/// The rest of `fi` (from its offset) appended to `fo` with read and write.
private func copyByReading(_ fi: Int32, _ fo: Int32, left: Int) -> Bool {
    var left = left
    var buf = [UInt8](repeating: 0, count: 1 << 17)
    while left > 0 {
        let n = read(fi, &buf, min(buf.count, left))
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { if n == 0 { errno = EIO }; return false }
        guard (try? buf.withUnsafeBytes({ try writeAll(fo, UnsafeRawBufferPointer(rebasing: $0[0..<n])) })) != nil else { return false }
        left -= n
    }
    return true
}

/// The bytes the files under `path` take on disk (hard links counted once; unreadable
/// directories skipped), walked fd-relative without following symlinks.
public func diskUsage(_ path: String) -> Int64 {
    var seen = Set<UInt64>()
    func walk(_ dirfd: Int32, depth: Int) -> Int64 {
        guard depth < 4096, let names = try? sortedNames(dirfd) else { return 0 }
        var total: Int64 = 0
        for name in names {
            var st = stat()
            guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if st.st_nlink > 1 && (st.st_mode & S_IFMT) != S_IFDIR && !seen.insert(UInt64(st.st_ino)).inserted { continue }
            total += Int64(st.st_blocks) * 512
            if (st.st_mode & S_IFMT) == S_IFDIR {
                let sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { continue }
                total += walk(sub, depth: depth + 1)
                close(sub)
            }
        }
        return total
    }
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    return walk(fd, depth: 0)
}
