import CArchive
import Foundation
import RBuildOCI
import RBuildSystem

/// Failures of unpacking and snapshot handling, naming the layer and the entry.
public struct SnapshotError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Unpacks one OCI layer into a directory that serves as an overlayfs lower layer, as an ordinary
/// user, without ever writing outside `dir`:
/// - every parent directory is opened with openat2(RESOLVE_IN_ROOT), and the last component is
///   created with O_NOFOLLOW/mkdirat/symlinkat relative to it, so `..`, absolute names and
///   symlinks planted by earlier entries cannot redirect a write;
/// - hard links must point at an entry of the same layer, resolved the same way;
/// - `.wh.NAME` becomes an overlayfs xattr whiteout (an empty NAME with `user.overlay.whiteout`,
///   its directory marked `user.overlay.opaque=x`), `.wh..wh..opq` marks the directory opaque
///   (`user.overlay.opaque=y`) — both honoured by overlayfs mounted with userxattr (Linux 6.8+);
/// - ownership is not restored: in single-id mode every file belongs to the one mapped user,
///   root inside. Device nodes cannot be created unprivileged and are skipped.
/// How the deletions of a layer are written when it is unpacked.
public enum WhiteoutStyle: Sendable {
    /// Kernel overlayfs lower layers (userxattr, Linux 6.8+): xattr whiteouts and opaque marks.
    case overlayXattr
    /// fuse-overlayfs lower layers: `.wh.NAME` and `.wh..wh..opq` files stay as they are in the
    /// layer (fuse-overlayfs honours both).
    case ociFiles
    /// Applied onto a full root (the copy snapshotter): deletions happen, an opaque directory
    /// loses whatever earlier layers put in it.
    case apply
}

/// What an image's layer must be as it unpacks: its tar must hash to `diffID` (as containerd's
/// applier checks it: a layer directory is shared by every image whose config names the same
/// diff_id, so a config must not be able to claim another layer's) in at most `maxSize`
/// uncompressed bytes, and write no more than that into files (a sparse entry reads short).
public struct LayerCheck: Sendable {
    public var diffID: Digest
    public var maxSize: Int64

    public init(diffID: Digest, maxSize: Int64 = MaxLayerSize.defaultValue) {
        self.diffID = diffID
        self.maxSize = maxSize
    }
}

/// Returns the entries whose owner is not 0:0 (ids as recorded in the layer) for the caller to
/// chown from inside the user namespace (`Ownership.apply`); nothing here changes owners.
/// With `check` (an image's layer), the blob is read through a `LayerStream` (gzip, zstd or
/// plain); without (an archive `ADD` unpacks), through libarchive's own filters.
@discardableResult
public func unpackLayer(_ blob: StoredBlob, into dir: String, layerName: String,
                        whiteouts style: WhiteoutStyle = .overlayXattr, check: LayerCheck? = nil) throws -> [Ownership.Record] {
    let rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard rootfd >= 0 else { throw SnapshotError("cannot open \(dir): \(String(cString: strerror(errno)))") }
    defer { close(rootfd) }
    let reader: TarReader
    do {
        if let check {
            reader = try TarReader(layer: LayerStream(blob, name: "layer \(layerName)", diffID: check.diffID, limit: check.maxSize))
        } else {
            reader = try TarReader(blob)
        }
    } catch let e as OCIError where e.code.isLayerCheck {
        throw e
    } catch {
        throw SnapshotError("layer \(layerName) cannot be read: \(error)")
    }
    /// Bytes written into files so far, against `check.maxSize`.
    var written: Int64 = 0
    var dirs: [(name: String, mode: mode_t, mtime: timespec)] = []
    var created = Set<String>()   // names this layer wrote (for opaque directories in .apply)
    var cachedParent: (path: String, fd: Int32)?
    defer { if let c = cachedParent { close(c.fd) } }
    // Modes the umask would not change can be given at creation, saving an fchmod per file.
    let umaskBits = processUmask()
    var owners: [String: Ownership.Record] = [:]

    func fail(_ entry: String, _ what: String) -> SnapshotError {
        SnapshotError("layer \(layerName): entry \"\(entry)\" \(what)")
    }

    /// The O_PATH fd of `parent` inside the root, directories created as needed.
    func parentFD(_ parent: String, entry: String) throws -> Int32 {
        if parent.isEmpty { return fcntl(rootfd, F_DUPFD_CLOEXEC, 0) }
        var fd = openInRoot(rootfd, parent, flags: O_PATH_FLAG | O_DIRECTORY | O_CLOEXEC)
        if fd == -ENOENT {
            var path = ""
            for part in pathComponents(parent) {
                let base = path.isEmpty ? fcntl(rootfd, F_DUPFD_CLOEXEC, 0) : openInRoot(rootfd, path, flags: O_PATH_FLAG | O_DIRECTORY | O_CLOEXEC)
                guard base >= 0 else { throw fail(entry, "has a parent that is not a directory inside the layer") }
                mkdirat(base, String(part), 0o755)
                close(base)
                path += (path.isEmpty ? "" : "/") + part
            }
            fd = openInRoot(rootfd, parent, flags: O_PATH_FLAG | O_DIRECTORY | O_CLOEXEC)
        }
        guard fd >= 0 else { throw fail(entry, "has a parent that cannot be opened inside the layer: \(String(cString: strerror(-fd)))") }
        return fd
    }

    func setXattr(_ pfd: Int32, _ name: String, _ key: String, _ value: String) {
        // xattrs need a real fd: reopen through /proc/self/fd of the O_PATH one.
        // The directory itself: follow the magic link; a child: do not follow its last component.
        if name.isEmpty {
            _ = value.withCString { setxattr("/proc/self/fd/\(pfd)", key, $0, strlen($0), 0) }
        } else {
            _ = value.withCString { lsetxattr("/proc/self/fd/\(pfd)/\(name)", key, $0, strlen($0), 0) }
        }
    }

    while true {
        let next: OpaquePointer?
        do {
            next = try reader.next()
        } catch let e as OCIError where e.code.isLayerCheck {
            throw e   // names the blob (or layer) and says what is wrong
        } catch {
            throw SnapshotError("layer \(layerName) is damaged: \(error)")
        }
        guard let entry = next else { break }
        let raw = String(cString: archive_entry_pathname(entry))
        let name: String
        do {
            name = try safeEntryName(raw, archive: "layer \(layerName)")
        } catch {
            throw SnapshotError("layer \(layerName): entry \"\(raw)\" is unsafe (names with .. are refused)")
        }
        // Names are split and compared as the kernel does, by bytes (pathComponents, `same`).
        let parts = pathComponents(name)
        guard let last = parts.last else { continue }
        let parent = parts.dropLast().joined(separator: "/")
        let leaf = String(last)
        let isWhiteout = leaf.utf8.starts(with: ".wh.".utf8)
        // The parent's fd is kept for the next entries in the same directory (a layer lists a
        // directory's files together), and dropped as soon as an entry could change what that
        // path resolves to: one named as the directory or an ancestor of it, or an opaque mark
        // or whiteout at or above it.
        if let c = cachedParent, same(c.path, name) || below(c.path, name)
            || (isWhiteout && (same(c.path, parent) || below(c.path, parent))) {
            close(c.fd)
            cachedParent = nil
        }
        let pfd: Int32
        if let c = cachedParent, same(c.path, parent) {
            pfd = c.fd
        } else {
            if let c = cachedParent { close(c.fd) }
            pfd = try parentFD(parent, entry: raw)
            cachedParent = (parent, pfd)
        }
        let mode = archive_entry_perm(entry)
        let type = archive_entry_filetype(entry)
        let mtime = timespec(tv_sec: archive_entry_mtime(entry), tv_nsec: 0)

        if style == .apply && same(leaf, ".wh..wh..opq") {
            // Everything earlier layers left in this directory goes; this layer's entries stay.
            for child in (try? sortedNames(pfd)) ?? [] {
                let path = parent.isEmpty ? child : parent + "/" + child
                if !created.contains(path) { try removeTree(pfd, child, entry: raw, layer: layerName) }
            }
            continue
        }
        if style == .overlayXattr && same(leaf, ".wh..wh..opq") {
            setXattr(pfd, "", "user.overlay.opaque", "y")
            continue
        }
        if style != .ociFiles && isWhiteout {
            let target = String(decoding: leaf.utf8.dropFirst(4), as: UTF8.self)
            guard !["", ".", ".."].contains(where: { same(target, $0) }) else { throw fail(raw, "is a whiteout of nothing") }
            // What is there goes: an earlier layer's entry (.apply), or one this layer made (both
            // styles, as moby's unpack does; opening it instead would block on a FIFO).
            try removeTree(pfd, target, entry: raw, layer: layerName)
            guard style == .overlayXattr else { continue }
            // Writable by its owner: setting a user.* xattr needs write permission.
            let fd = openat(pfd, target, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw fail(raw, "(a whiteout) cannot be created: \(String(cString: strerror(errno)))") }
            close(fd)
            setXattr(pfd, target, "user.overlay.whiteout", "")
            var current = [CChar](repeating: 0, count: 2)
            if getxattr("/proc/self/fd/\(pfd)", "user.overlay.opaque", &current, 1) != 1 {
                setXattr(pfd, "", "user.overlay.opaque", "x")
            }
            continue
        }
        created.insert(name)
        let uid = UInt32(truncatingIfNeeded: archive_entry_uid(entry)), gid = UInt32(truncatingIfNeeded: archive_entry_gid(entry))
        if uid != 0 || gid != 0 {
            owners[name] = Ownership.Record(path: name, uid: uid, gid: gid, mode: UInt32(archive_entry_perm(entry)))
        } else {
            owners[name] = nil
        }
        // A later entry (or this layer's, over an earlier layer's) replaces one of the same
        // name, except that a directory over a directory merges. A regular file finds out by
        // failing to create (O_EXCL) instead of a stat per entry.
        var existing = stat()
        if type != UInt32(0o100000) || archive_entry_hardlink(entry) != nil,
           fstatat(pfd, leaf, &existing, AT_SYMLINK_NOFOLLOW) == 0
            && (type != UInt32(0o040000) || (existing.st_mode & S_IFMT) != S_IFDIR) {
            try removeTree(pfd, leaf, entry: raw, layer: layerName)
        }
        // Hard links first: tar readers do not always give them a file type.
        if let hl = archive_entry_hardlink(entry) {
            let rawTarget = String(cString: hl)
            guard let targetName = try? safeEntryName(rawTarget, archive: layerName) else {
                throw fail(raw, "is a hard link to \"\(rawTarget)\", outside the layer")
            }
            let tfd = openInRoot(rootfd, targetName, flags: O_PATH_FLAG | O_NOFOLLOW | O_CLOEXEC)
            guard tfd >= 0 else { throw fail(raw, "is a hard link to \(targetName), which is not in this layer") }
            defer { close(tfd) }
            guard linkat(AT_FDCWD, "/proc/self/fd/\(tfd)", pfd, leaf, AT_SYMLINK_FOLLOW) == 0 else {
                throw fail(raw, "(a hard link) cannot be created: \(String(cString: strerror(errno)))")
            }
            continue
        }
        switch type {
        case 0o100000:   // regular file
            // Set-id and sticky bits cannot be given at creation; the umask may strip others.
            let plain = mode & 0o7000 == 0 && mode & umaskBits == 0
            var fd = openat(pfd, leaf, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, plain ? mode & 0o777 : 0o600)
            if fd < 0 && errno == EEXIST {
                try removeTree(pfd, leaf, entry: raw, layer: layerName)
                fd = openat(pfd, leaf, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, plain ? mode & 0o777 : 0o600)
            }
            guard fd >= 0 else { throw fail(raw, "cannot be created: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            do {
                try reader.data { chunk in
                    written += Int64(chunk.count)
                    if let check, written > check.maxSize {
                        throw OCIError(.tooLarge, "layer \(layerName) writes more than \(MaxLayerSize.describe(check.maxSize)) into its files, the limit (--max-layer-size, \(MaxLayerSize.variable)): refused")
                    }
                    var off = 0
                    while off < chunk.count {
                        let w = write(fd, chunk.baseAddress! + off, chunk.count - off)
                        guard w > 0 else { throw fail(raw, "cannot be written: \(String(cString: strerror(errno)))") }
                        off += w
                    }
                }
            } catch let e as SnapshotError {
                throw e
            } catch let e as OCIError where e.code.isLayerCheck {
                throw e
            } catch {
                throw fail(raw, "is damaged (truncated layer?): \(error)")
            }
            restoreXattrs(entry, fd: fd)
            if !plain { fchmod(fd, mode) }
            var times = [mtime, mtime]
            futimens(fd, &times)
        case 0o040000:   // directory
            if mkdirat(pfd, leaf, 0o755) != 0 && errno != EEXIST {
                throw fail(raw, "cannot be created: \(String(cString: strerror(errno)))")
            }
            let dfd = openInRoot(rootfd, name, flags: O_PATH_FLAG | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard dfd >= 0 else { throw fail(raw, "is not a directory in this layer") }
            chmod("/proc/self/fd/\(dfd)", mode | 0o700)   // keep it writable until the end
            let rfd = open("/proc/self/fd/\(dfd)", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if rfd >= 0 { restoreXattrs(entry, fd: rfd); close(rfd) }
            close(dfd)
            dirs.append((name, mode, mtime))
        case 0o120000:   // symlink: its target is never followed here, only stored
            guard let target = archive_entry_symlink(entry), symlinkat(target, pfd, leaf) == 0 else {
                throw fail(raw, "(a symlink) cannot be created: \(String(cString: strerror(errno)))")
            }
            var times = [mtime, mtime]
            utimensat(pfd, leaf, &times, AT_SYMLINK_NOFOLLOW)
        case 0o010000:   // fifo
            mkfifoat(pfd, leaf, mode)
        default:
            continue     // device nodes need CAP_MKNOD in the initial namespace
        }
    }
    // Directory modes and times last: their entries had to be created first.
    for d in dirs.reversed() {
        let dfd = openInRoot(rootfd, d.name, flags: O_PATH_FLAG | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dfd >= 0 else { continue }
        chmod("/proc/self/fd/\(dfd)", d.mode)
        var times = [d.mtime, d.mtime]
        utimensat(AT_FDCWD, "/proc/self/fd/\(dfd)", &times, 0)
        close(dfd)
    }
    return owners.keys.sorted().map { owners[$0]! }
}

extension OCIError.Code {
    /// The failures of reading a layer that name it themselves and say what is wrong: passed on
    /// as they are, not as "damaged".
    var isLayerCheck: Bool { [.corruptBlob, .missingBlob, .tooLarge, .diffIDMismatch].contains(self) }
}

/// Byte equality: String's == takes canonically equivalent names (é, e + U+0301) for one, the
/// kernel does not.
func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

/// Whether `path` is below `dir` ("" is the root), by bytes.
func below(_ path: String, _ dir: String) -> Bool { dir.isEmpty || path.utf8.starts(with: (dir + "/").utf8) }

/// The process's umask, read without changing it (umask(2) would race other threads).
func processUmask() -> mode_t {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Umask:") }),
          let value = mode_t(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) else { return 0o777 }
    return value
}

/// The extended attributes a layer entry carries (`isLayerXattr`); security.capability needs
/// privileges a user namespace does not give over host files, so setting it may fail quietly.
func restoreXattrs(_ entry: OpaquePointer, fd: Int32) {
    guard archive_entry_xattr_reset(entry) > 0 else { return }
    var name: UnsafePointer<CChar>?
    var value: UnsafeRawPointer?
    var size = 0
    while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
        guard let name, isLayerXattr(String(cString: name)) else { continue }
        fsetxattr(fd, name, value, size, 0)
    }
}

/// Removes `name` in `dirfd` and, for a directory, everything below it, never following a
/// symlink; a failure names the layer and the entry that asked for it.
func removeTree(_ dirfd: Int32, _ name: String, entry: String, layer: String) throws {
    do {
        try removeTree(in: dirfd, named: name)
    } catch let e as SystemError {
        throw SnapshotError("layer \(layer): entry \"\(entry)\": \(e)")
    }
}
