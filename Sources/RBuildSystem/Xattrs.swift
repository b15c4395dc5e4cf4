#if canImport(Glibc)
import Glibc
#endif
import CRBuildSys

/// Whether a layer carries this extended attribute: security.capability and user.*, but not the
/// marks overlayfs and fuse-overlayfs keep for themselves.
public func isLayerXattr(_ name: String) -> Bool {
    name == "security.capability"
        || (name.hasPrefix("user.") && !name.hasPrefix("user.overlay.") && !name.hasPrefix("user.fuseoverlayfs."))
}

/// The layer-carried extended attributes of `path` (not following a symlink), sorted by name.
public func layerXattrs(path: String) -> [(name: String, value: [UInt8])] {
    xattrs(list: { llistxattr(path, $0, $1) }, get: { lgetxattr(path, $0, $1, $2) }, where: isLayerXattr)
}

/// The layer-carried extended attributes of an open file, sorted by name.
public func layerXattrs(fd: Int32) -> [(name: String, value: [UInt8])] {
    xattrs(list: { flistxattr(fd, $0, $1) }, get: { fgetxattr(fd, $0, $1, $2) }, where: isLayerXattr)
}

/// Copies the layer-carried xattrs of `name` in `source` to `name` in `destination` (both
/// directory fds; the entries are not followed if symlinks), and with `overlayMarks` overlayfs's
/// own (user.overlay.*) too. Failures are ignored: an xattr the filesystem or our privileges
/// refuse is one the copy goes without.
public func copyLayerXattrs(from source: Int32, _ name: String, to destination: Int32, _ destName: String,
                            overlayMarks: Bool = false) {
    let path = "/proc/self/fd/\(source)/\(name)"
    let to = "/proc/self/fd/\(destination)/\(destName)"
    let wanted = { (x: String) in isLayerXattr(x) || (overlayMarks && x.hasPrefix("user.overlay.")) }
    for x in xattrs(list: { llistxattr(path, $0, $1) }, get: { lgetxattr(path, $0, $1, $2) }, where: wanted) {
        lsetxattr(to, x.name, x.value, x.value.count, 0)
    }
}

/// The extended attributes whose name `wanted` accepts, sorted by name, read with `list`
/// (listxattr's shape) and `get` (getxattr's shape).
private func xattrs(list: (UnsafeMutablePointer<CChar>?, Int) -> Int,
                    get: (String, UnsafeMutableRawPointer?, Int) -> Int,
                    where wanted: (String) -> Bool) -> [(name: String, value: [UInt8])] {
    let size = list(nil, 0)
    guard size > 0 else { return [] }
    var buf = [CChar](repeating: 0, count: size)
    let n = list(&buf, size)
    guard n > 0 else { return [] }
    let names = buf[0..<n].split(separator: 0).map { String(cString: Array($0) + [0]) }
    var out: [(name: String, value: [UInt8])] = []
    for name in names.sorted() where wanted(name) {
        let vsize = get(name, nil, 0)
        guard vsize >= 0 else { continue }
        var value = [UInt8](repeating: 0, count: max(vsize, 1))
        let got = get(name, &value, vsize)
        guard got >= 0 else { continue }
        out.append((name, Array(value[0..<got])))
    }
    return out
}

/// Whether `path` (not followed if a symlink) has the extended attribute `name`.
public func hasXattr(path: String, name: String) -> Bool {
    lgetxattr(path, name, nil, 0) >= 0
}
