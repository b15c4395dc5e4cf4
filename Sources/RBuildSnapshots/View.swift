import CArchive
import Foundation
import RBuildOCI
import RBuildSystem

/// A read-only view of a snapshot's root as the sandbox would see it, read from the host without
/// mounting anything: the layer directories merged topmost first, with every deletion mark
/// honoured (overlay 0/0 devices, `user.overlay.whiteout` files, OCI `.wh.` files, opaque
/// directories by xattr or `.wh..wh..opq`). A copy snapshot or a build context is a view of
/// one directory. Lookups never follow a symlink out of the view: links are resolved against
/// the view's own root, as `chroot` would.
public struct SnapshotView: Sendable {
    /// Topmost first.
    public let layers: [String]

    public init(_ snapshot: Snapshot) { layers = snapshot.directories.reversed() }
    public init(directory: String) { layers = [directory] }

    /// One directory of the view: the fds of the layers that contribute to it, topmost first.
    public final class Directory {
        public let fds: [Int32]
        init(_ fds: [Int32]) { self.fds = fds }
        deinit { for fd in fds { close(fd) } }
    }

    /// An entry of a directory: the layer directory holding it and its status.
    public struct Entry {
        public var name: String
        /// The layer directory holding the entry: an fd of `holder`, open as long as this entry lives.
        public var dirfd: Int32
        public var stat: stat
        let holder: Directory
        public var type: mode_t { stat.st_mode & S_IFMT }
    }

    public func root() throws -> Directory {
        var fds: [Int32] = []
        for l in layers {
            let fd = open(l, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else {
                for f in fds { close(f) }
                throw SnapshotError("cannot open snapshot layer \(l): \(String(cString: strerror(errno)))")
            }
            fds.append(fd)
            if layers.count > 1 && isOpaqueDirectory(fd) { break }
        }
        return Directory(fds)
    }

    /// Whether `name` is deleted in layer directory `fd` (so lower layers do not show it).
    static func isWhiteout(_ fd: Int32, _ name: String, _ st: stat?) -> Bool {
        if let st {
            let type = st.st_mode & S_IFMT
            if type == S_IFCHR && st.st_rdev == 0 { return true }
            if type == S_IFREG && st.st_size == 0 {
                return fgetxattrAt(fd, name, "user.overlay.whiteout") || fgetxattrAt(fd, name, "trusted.overlay.whiteout")
            }
            return false
        }
        var wh = stat()
        return fstatat(fd, ".wh." + name, &wh, AT_SYMLINK_NOFOLLOW) == 0
    }

    static func fgetxattrAt(_ fd: Int32, _ name: String, _ attr: String) -> Bool {
        lgetxattr("/proc/self/fd/\(fd)/\(name)", attr, nil, 0) >= 0
    }

    func isOpaqueDirectory(_ fd: Int32) -> Bool {
        var buf = [UInt8](repeating: 0, count: 4)
        for attr in ["user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque"] {
            let n = fgetxattr(fd, attr, &buf, buf.count)
            if n >= 1 && buf[0] == UInt8(ascii: "y") { return true }
        }
        var st = stat()
        return fstatat(fd, ".wh..wh..opq", &st, AT_SYMLINK_NOFOLLOW) == 0
    }

    /// The entries of a directory, sorted by name, each from the topmost layer that has it.
    public func entries(_ dir: Directory) throws -> [Entry] {
        var out: [String: Entry] = [:]
        var hidden = Set<String>()
        for fd in dir.fds {
            for name in try sortedNames(fd) {
                if name.hasPrefix(".wh.") {
                    if name != ".wh..wh..opq" && layers.count > 1 { hidden.insert(String(name.dropFirst(4))) }
                    continue
                }
                if out[name] != nil || hidden.contains(name) { continue }
                var st = stat()
                guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                if layers.count > 1 && SnapshotView.isWhiteout(fd, name, st) { hidden.insert(name); continue }
                out[name] = Entry(name: name, dirfd: fd, stat: st, holder: dir)
            }
            // A name this layer has (as anything) hides it in lower layers.
            for name in out.keys { hidden.insert(name) }
        }
        return out.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }.map { out[$0]! }
    }

    /// One entry of a directory, or nil.
    public func entry(_ dir: Directory, _ name: String) -> Entry? {
        for fd in dir.fds {
            var st = stat()
            if fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                if layers.count > 1 && SnapshotView.isWhiteout(fd, name, st) { return nil }
                return Entry(name: name, dirfd: fd, stat: st, holder: dir)
            }
            if layers.count > 1 && SnapshotView.isWhiteout(fd, name, nil) { return nil }
        }
        return nil
    }

    /// The subdirectory `name` of `dir` (nil when it is missing or not a directory).
    public func child(_ dir: Directory, _ name: String) -> Directory? {
        var fds: [Int32] = []
        for fd in dir.fds {
            var st = stat()
            if fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                if layers.count > 1 && SnapshotView.isWhiteout(fd, name, st) { break }
                guard (st.st_mode & S_IFMT) == S_IFDIR else { break }   // a file hides lower dirs
                let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { break }
                fds.append(sub)
                if layers.count > 1 && isOpaqueDirectory(sub) { break }
            } else if layers.count > 1 && SnapshotView.isWhiteout(fd, name, nil) {
                break
            }
        }
        return fds.isEmpty ? nil : Directory(fds)
    }

    /// Resolves `path` (absolute inside the view) to its canonical components: symlinks along the
    /// way are followed against the view's root (`..` never leaves it), and the last one too
    /// when `followLast`. Components that do not exist are kept as written.
    public func resolve(_ path: String, followLast: Bool) throws -> [String] {
        var pending = pathComponents(path).map(String.init).reversed() as [String]
        var done: [String] = []
        var hops = 0
        var missing = false   // once a component is missing, the rest is kept as written
        while let comp = pending.popLast() {
            if comp == "." || comp.isEmpty { continue }
            if comp == ".." {
                if !done.isEmpty { done.removeLast() }
                continue
            }
            if !missing, let (_, e) = try lookup(done + [comp]) {
                if e.type == S_IFLNK && (!pending.isEmpty || followLast) {
                    hops += 1
                    guard hops <= 40 else { throw SnapshotError("too many levels of symbolic links resolving \(path)") }
                    let target = linkTarget(e.dirfd, comp) ?? ""
                    if target.utf8.first == UInt8(ascii: "/") { done = [] }
                    pending += pathComponents(target).map(String.init).reversed()
                    continue
                }
            } else {
                missing = true
            }
            done.append(comp)
        }
        return done
    }

    /// The directory at canonical components `comps`, or nil.
    public func directory(_ comps: [String]) throws -> Directory? {
        var d = try root()
        for c in comps {
            guard let sub = child(d, c) else { return nil }
            d = sub
        }
        return d
    }

    /// The entry at canonical components `comps` (the root itself for none), with the directory
    /// holding it.
    public func lookup(_ comps: [String]) throws -> (parent: Directory, entry: Entry)? {
        guard let name = comps.last else { return nil }
        guard let parent = try directory(Array(comps.dropLast())), let e = entry(parent, name) else { return nil }
        return (parent, e)
    }

    /// The bytes of a file the builder reads for itself (/etc/passwd…), its symlinks resolved
    /// inside the view, or nil when there is none. Anything but a regular file of at most
    /// `limit` bytes is refused with an `ImageFileError` (see `readFileInRoot`).
    public func readFile(_ path: String, limit: Int = imageFileSizeLimit) throws -> [UInt8]? {
        guard let (_, e) = try lookup(try resolve(path, followLast: true)) else { return nil }
        return try readFileInRoot(e.dirfd, e.name, limit: limit, followLast: false, name: path)
    }
}

/// Copies entries out of a view into a plain directory: regular files reflinked or copied,
/// symlinks as symlinks, modes, times to the nanosecond and layer xattrs kept. The copies belong
/// to the invoking user; what each entry's owner was (inside the sandbox's id map) is returned
/// by relative destination path, for the layer that records them.
public struct ViewCopier {
    public let view: SnapshotView
    public let mapping: IDMapping
    /// Asked with each entry's path relative to the copy's source; false leaves it out.
    public var include: ((String) -> Bool)?
    /// Replaces every copied entry's permission bits (`COPY --chmod`).
    public var mode: mode_t?
    public private(set) var owners: [String: (uid: UInt32, gid: UInt32)] = [:]
    /// Every destination path written, relative to `destRoot`.
    public private(set) var copied: [String] = []
    var canClone = true
    var links: [String: String] = [:]   // "dev:ino" → destination path of the first copy
    /// The destination's root directory (the layer being made): `destRel`s are relative to it.
    public let destRoot: Int32

    public init(view: SnapshotView, mapping: IDMapping, destRoot: Int32) {
        self.view = view
        self.mapping = mapping
        self.destRoot = destRoot
    }

    func fail(_ what: String, _ path: String) -> SnapshotError {
        SnapshotError("copying \(path): \(what): \(String(cString: strerror(errno)))")
    }

    /// Copies `entry` (in `parent`) to `destDir/destName`, `destRel` being that path relative to
    /// the layer root; `srcRel` is its path relative to the copy's source (for `include`).
    public mutating func copy(_ entry: SnapshotView.Entry, in parent: SnapshotView.Directory, srcRel: String,
                              to destDir: Int32, name destName: String, destRel: String, overwrite: Bool = true) throws {
        let st = entry.stat
        let type = entry.type
        copied.append(destRel)
        if st.st_uid != mapping.hostUID || st.st_gid != mapping.hostGID {
            owners[destRel] = (mapping.insideID(host: st.st_uid, uid: true) ?? 65534, mapping.insideID(host: st.st_gid, uid: false) ?? 65534)
        }
        var existing = stat()
        let exists = fstatat(destDir, destName, &existing, AT_SYMLINK_NOFOLLOW) == 0
        if exists && !(type == S_IFDIR && (existing.st_mode & S_IFMT) == S_IFDIR) {
            guard overwrite else { return }
            if (existing.st_mode & S_IFMT) == S_IFDIR {
                try removeTree(destDir, destName, entry: destRel, layer: "copy")
            } else {
                unlinkat(destDir, destName, 0)
            }
        }
        if type != S_IFDIR && st.st_nlink > 1 {
            let key = "\(st.st_dev):\(st.st_ino)"
            if let first = links[key] {
                // Another name of a file copied already: a hard link, as in the source.
                if linkat(destRoot, first, destDir, destName, 0) == 0 { return }
            } else {
                links[key] = destRel
            }
        }
        let path = view.layers[0] + "/" + srcRel
        switch type {
        case S_IFDIR:
            if !(exists && (existing.st_mode & S_IFMT) == S_IFDIR) {
                guard mkdirat(destDir, destName, 0o700) == 0 else { throw fail("mkdir", path) }
            }
            let dd = openat(destDir, destName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard dd >= 0 else { throw fail("open copy", path) }
            defer { close(dd) }
            if let sub = view.child(parent, entry.name) {
                for e in try view.entries(sub) {
                    let rel = srcRel.isEmpty ? e.name : srcRel + "/" + e.name
                    if let include, !include(rel) { continue }
                    try copy(e, in: sub, srcRel: rel, to: dd, name: e.name, destRel: destRel + "/" + e.name)
                }
            }
        case S_IFREG:
            let fi = openat(entry.dirfd, entry.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fi >= 0 else { throw fail("open", path) }
            defer { close(fi) }
            let fo = openat(destDir, destName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fo >= 0 else { throw fail("create", path) }
            defer { close(fo) }
            guard copyContents(fi, fo, size: Int(st.st_size), canClone: &canClone) else { throw fail("copy", path) }
        case S_IFLNK:
            guard let target = linkTarget(entry.dirfd, entry.name), symlinkat(target, destDir, destName) == 0 else {
                throw fail("symlink", path)
            }
        case S_IFIFO:
            guard mkfifoat(destDir, destName, st.st_mode & 0o7777) == 0 else { throw fail("mkfifo", path) }
        default:
            return   // device nodes and sockets are not copied (no CAP_MKNOD here)
        }
        if type != S_IFLNK {
            copyLayerXattrs(from: entry.dirfd, entry.name, to: destDir, destName)
            fchmodat(destDir, destName, mode ?? (st.st_mode & 0o7777), 0)
        }
        var times = [st.st_atim, st.st_mtim]
        utimensat(destDir, destName, &times, AT_SYMLINK_NOFOLLOW)
    }
}
