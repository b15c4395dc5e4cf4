#if canImport(Glibc)
import Glibc
#endif

// Tree work relative to directory fds: each level is opened with O_NOFOLLOW from the one above,
// so a symlink planted in a tree (by an image, a build step) never sends a walk outside it.

/// Directory entries in byte order, without . and .. (`dirfd` may be an O_PATH descriptor).
/// `path` names the directory in the error; without it, the fd's own path is looked up.
public func sortedNames(_ dirfd: Int32, path: String? = nil) throws -> [String] {
    let fd = retryingOnInterrupt { openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    guard fd >= 0 else { throw SystemError("openat", path: path ?? descriptorPath(dirfd)) }
    guard let dir = fdopendir(fd) else {
        let e = SystemError("fdopendir", path: path ?? descriptorPath(dirfd))
        close(fd)
        throw e
    }
    defer { closedir(dir) }
    var names: [[UInt8]] = []
    while let ent = readdir(dir) {
        let name = withUnsafeBytes(of: ent.pointee.d_name) { raw -> [UInt8] in
            Array(raw.prefix(while: { $0 != 0 }))
        }
        if name == [0x2E] || name == [0x2E, 0x2E] { continue }
        names.append(name)
    }
    return names.sorted { $0.lexicographicallyPrecedes($1) }.map { String(decoding: $0, as: UTF8.self) }
}

/// The target of the symlink `name` in `dirfd`, or nil when it is not one.
public func linkTarget(_ dirfd: Int32, _ name: String) -> String? {
    linkTargetBytes(dirfd, name).map { String(cString: $0) }
}

/// The target of the symlink `name` in `dirfd` as its bytes, NUL-terminated (a String replaces
/// bytes that are not UTF-8), or nil when it is not one.
public func linkTargetBytes(_ dirfd: Int32, _ name: String) -> [CChar]? {
    var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlinkat(dirfd, name, &target, target.count - 1)
    guard n >= 0 else { return nil }
    target.removeSubrange((n + 1)...)
    target[n] = 0
    return target
}

/// What `fd` is open on, for messages ("fd N" when /proc cannot say).
package func descriptorPath(_ fd: Int32) -> String {
    linkTarget(AT_FDCWD, "/proc/self/fd/\(fd)") ?? "fd \(fd)"
}

/// Removes `name` in `dirfd` and, for a directory, everything below it, never following a
/// symlink. A missing entry is not an error. Errors name the entry by `path` (default `name`).
public func removeTree(in dirfd: Int32, named name: String, path: String? = nil) throws {
    let path = path ?? name
    if unlinkat(dirfd, name, 0) == 0 || errno == ENOENT { return }
    guard errno == EISDIR || errno == EPERM else { throw SystemError("unlinkat", path: path) }
    // A directory without read or write permission (overlayfs leaves work/work at 000) cannot be
    // listed or emptied: make it ours to change first. fchmodat does not follow symlinks here
    // (the entry is a directory: unlinkat said EISDIR).
    fchmodat(dirfd, name, 0o700, 0)
    let sub = try FileDescriptor(at: dirfd, name, flags: O_RDONLY | O_DIRECTORY | O_NOFOLLOW, path: path)
    for child in try sortedNames(sub.rawValue, path: path) {
        try removeTree(in: sub.rawValue, named: child, path: path + "/" + child)
    }
    sub.close()
    guard unlinkat(dirfd, name, AT_REMOVEDIR) == 0 else { throw SystemError("unlinkat", path: path) }
}

/// Removes the tree at `path` (its last component relative to its parent, so a symlink there is
/// removed, not followed). Nothing happens when the parent cannot be opened.
public func removeTree(atPath path: String) throws {
    let slash = path.lastIndex(of: "/")
    let parentPath = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    let parent = retryingOnInterrupt { open(parentPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    guard parent >= 0 else { return }
    defer { close(parent) }
    let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
    try removeTree(in: parent, named: name, path: path)
}
