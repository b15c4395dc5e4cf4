#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import CRBuildSys
import Foundation
import RBuildSystem

extension Sandbox {
    /// The chroot isolation (`Isolation.chroot`): rbuild runs as root where no namespace can be
    /// made, so nothing is mounted. The root's /etc files and /dev nodes are put in place for the
    /// run and taken back after it (`ChrootRoot`), so a build step's layer never holds them.
    static func runChrooted(_ spec: SandboxSpec, rootfs: String) throws -> Int32 {
        func refuse(_ what: String) -> RuntimeError {
            RuntimeError(.hostUnsupported, "\(what) cannot be used with the chroot isolation, which makes no mounts (no user namespace can be made here; `rbuild info` says why)")
        }
        if spec.overlay != nil { throw refuse("an overlay root (choose --snapshotter copy)") }
        if spec.readOnlyRoot { throw refuse("a read-only root") }
        if spec.terminal != nil { throw refuse("a terminal (-t)") }
        if let m = spec.mounts.first { throw refuse("--mount \(m.source):\(m.target)") }
        if case .userNamespaceBinfmt = try Emulation.mode(for: spec.architecture) {
            throw refuse("running \(spec.architecture.platform) programs through qemu registered in a user namespace (register qemu-user-static on the host, with flag F)")
        }
        var mapping = IDMapping.detect()
        mapping.mode = .host
        let user = try spec.readRootFile.map { try UserDatabase.resolve(spec.user, reading: $0) }
            ?? UserDatabase.resolve(spec.user, roots: [rootfs])
        try checkMapped(user: user, spec: spec, mapping: mapping)

        // The container's own network, hostname and name servers: there is no namespace of the step's.
        var uts = utsname()
        uname(&uts)
        let hostname = withUnsafeBytes(of: &uts.nodename) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let resolv = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        let files = [("hosts", EtcFiles.hosts(hostname: hostname, extraHosts: spec.extraHosts)),
                     ("hostname", hostname + "\n"),
                     ("resolv.conf", EtcFiles.resolvConf(network: .host, helper: nil, host: resolv))]
        let root = try ChrootRoot(rootfs: rootfs)
        var status: Int32 = 0
        var failure: Error?
        do {
            try root.place(etcFiles: files.map { ($0.0, Array($0.1.utf8)) })
            try root.place(mounts: spec.extraMounts)
            var capabilities = spec.capabilities
            capabilities.mask &= ~(UInt64(1) << 18)   // CAP_SYS_CHROOT: a second chroot leaves the first
            var spec = spec
            spec.capabilities = capabilities
            let program = try seccompProgram(spec, fakeIDs: false, crossProcess: false)
            let arena = CArena()
            var plan = try commonPlan(spec, root: rootfs, user: user, mapping: mapping, program: program, arena: arena)
            plan.chroot_root = 1
            plan.clone_flags = 0
            let outcome = try spawnAndWait(&plan, mapping: mapping, forwardSignals: spec.forwardSignals)
            withExtendedLifetime(arena) {}
            if let report = outcome.report {
                throw describe(report, steps: [], spec: spec, rootfs: rootfs, pathSearch: searchPath(plan))
            }
            status = outcome.exitCode
        } catch {
            failure = error
        }
        // Taken back whatever happened, before the caller diffs the root.
        do { try root.restore() } catch { failure = failure ?? error }
        if let failure { throw failure }
        return status
    }
}

/// What the chroot isolation puts in a root for one run, and takes back after it: /etc/hosts,
/// /etc/hostname and /etc/resolv.conf, and /dev's standard nodes (made with mknod where the
/// container allows it: CAP_MKNOD, which Docker grants; a node it refuses is left out). An entry
/// the image has at one of those names is moved aside meanwhile (to a directory beside the root,
/// on the same filesystem) and put back, and the directories' times are restored, so that the
/// step's layer shows none of it. Every path is resolved inside the root (RESOLVE_IN_ROOT): a
/// symlink in the image never sends a write outside it.
final class ChrootRoot {
    let rootfs: String
    private let rootFD: Int32
    private let aside: String
    private let asideFD: Int32
    private var undo: [() throws -> Void] = []

    /// The devices bound into a sandbox's /dev (`sandboxDevices`), with their numbers.
    static let devices: [(name: String, major: UInt32, minor: UInt32)] = [
        ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
    ]

    /// A new file `name` in `dir` with these bytes, mode and owner (nil: ours); nil, or why not.
    static func makeFile(_ dir: Int32, _ name: String, _ content: [UInt8], mode: mode_t,
                         owner: (uid: UInt32, gid: UInt32)? = nil) -> String? {
        let fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return errnoText(errno) }
        defer { close(fd) }
        guard (try? writeAll(fd, content)) != nil, owner.map({ fchown(fd, $0.uid, $0.gid) == 0 }) ?? true,
              fchmod(fd, mode & 0o7777) == 0 else { return errnoText(errno) }
        return nil
    }

    /// A new directory `name` in `dir`, mode 1777 (a tmpfs's, /dev/shm's); nil, or why not.
    static func makeDirectory(_ dir: Int32, _ name: String) -> String? {
        mkdirat(dir, name, 0o1777) == 0 && fchmodat(dir, name, 0o1777, 0) == 0 ? nil : errnoText(errno)
    }

    /// glibc's makedev (a macro Swift cannot import): the kernel's dev_t encoding.
    static func deviceNumber(_ major: UInt32, _ minor: UInt32) -> dev_t {
        let ma = UInt64(major), mi = UInt64(minor)
        return dev_t(((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff))
    }

    init(rootfs: String) throws {
        self.rootfs = rootfs
        rootFD = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw RuntimeError(.rootfsNotFound, "cannot open the root \(rootfs): \(errnoText(errno))") }
        let parent = (rootfs as NSString).deletingLastPathComponent
        guard let dir = makeTemporaryDirectory(prefix: parent + "/.rbuild-chroot-") else {
            close(rootFD)
            throw RuntimeError(.spawnFailed, "cannot create a directory beside \(rootfs): \(errnoText(errno))")
        }
        aside = dir
        asideFD = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard asideFD >= 0 else {
            // Every stored property is set: the throw runs deinit, which closes rootFD and
            // removes the directory.
            throw RuntimeError(.spawnFailed, "cannot open \(dir): \(errnoText(errno))")
        }
    }

    deinit {
        close(rootFD)
        close(asideFD)
        rmdir(aside)
    }

    func place(etcFiles: [(name: String, content: [UInt8])]) throws {
        if let etc = try directory("etc") {
            for (name, content) in etcFiles {
                try replace(name, in: etc, required: false) { dir, name in
                    ChrootRoot.makeFile(dir, name, content, mode: 0o644)
                }
            }
        }
        if let dev = try directory("dev") {
            for d in ChrootRoot.devices {
                // Where the container refuses mknod, the node is left out.
                try replace(d.name, in: dev, required: false) { dir, name in
                    mknodat(dir, name, S_IFCHR | 0o666, ChrootRoot.deviceNumber(d.major, d.minor)) == 0
                        && fchmodat(dir, name, 0o666, 0) == 0 ? nil : errnoText(errno)
                }
            }
            try replace("shm", in: dev, keepExisting: true, required: false, make: ChrootRoot.makeDirectory)
        }
    }

    /// RUN --mount without mounts: what each would show is put at its target for the run and
    /// taken back after it. A directory or socket rbuild holds for the step (a cache mount's
    /// directory, a staged copy of the context or of a stage's files, an agent's socket) is
    /// renamed in and back out, so a cache keeps what the step wrote; a tmpfs is an empty directory, removed
    /// with what the step left in it; a secret is a file with its owner and mode, removed after.
    /// Read-only is not enforced: what a step writes to a read-only mount is thrown away with it,
    /// except in a cache mount, whose directory it is.
    func place(mounts: [SandboxMount]) throws {
        for m in mounts {
            guard let (dir, name) = try parentDirectory(of: m.target) else {
                throw RuntimeError(.badMount, "cannot mount on \(m.target): a path in the root leads to no directory")
            }
            switch m {
            case .bind(let source, let subpath, _, _):
                let from = subpath.map { source + "/" + $0 } ?? source
                try replace(name, in: dir, make: { d, n in renameat(AT_FDCWD, from, d, n) == 0 ? nil : errnoText(errno) },
                            takeBack: { d, n in
                                if renameat(d, n, AT_FDCWD, from) != 0 {
                                    throw RuntimeError(.spawnFailed, "cannot move \(m.target) back to \(from) after a chroot run: \(errnoText(errno))")
                                }
                            })
            case .root:
                // The solver hands the chroot isolation a copy to rename in instead (Mounts.swift).
                throw RuntimeError(.hostUnsupported, "mounting a snapshot on \(m.target) cannot be done with the chroot isolation, which makes no mounts")
            case .tmpfs:
                try replace(name, in: dir, make: ChrootRoot.makeDirectory)
            case .file(_, let content, let uid, let gid, let mode):
                try replace(name, in: dir) { d, n in ChrootRoot.makeFile(d, n, content, mode: mode, owner: (uid, gid)) }
            }
        }
    }

    /// The directory a mount target is in (resolved inside the root, its missing directories
    /// made and registered for removal when still empty) and the target's last component; nil
    /// when a component is no directory.
    private func parentDirectory(of target: String) throws -> (Int32, String)? {
        let comps = target.split(separator: "/").map(String.init).filter { !$0.isEmpty && $0 != "." }
        guard let name = comps.last, name != ".." else { return nil }
        var fd = fcntl(rootFD, F_DUPFD_CLOEXEC, 0)
        for i in 0..<(comps.count - 1) {
            let prefix = comps[0...i].joined(separator: "/")
            var next = rb_open_in_root(rootFD, prefix, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
            if next == -ENOENT, mkdirat(fd, comps[i], 0o755) == 0 {
                let (parent, made) = (fd, comps[i])
                let keep = fcntl(parent, F_DUPFD_CLOEXEC, 0)
                undo.append { unlinkat(keep, made, AT_REMOVEDIR); close(keep) }   // kept when not empty
                next = rb_open_in_root(rootFD, prefix, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
            }
            close(fd)
            guard next >= 0 else { return nil }
            fd = next
        }
        let dir = fd
        undo.append { close(dir) }
        return (dir, name)
    }

    /// Undoes `place`, last change first. Every step is tried; the first failure is thrown.
    func restore() throws {
        var first: Error?
        for step in undo.reversed() {
            do { try step() } catch { first = first ?? error }
        }
        undo = []
        if let first { throw first }
    }

    /// The directory `name` of the root (resolved inside it), made when missing (and removed
    /// again when it is still empty); its times are put back by `restore`. nil when it cannot
    /// be had (a file of that name): that part is left out.
    private func directory(_ name: String) throws -> Int32? {
        var made = false
        var fd = rb_open_in_root(rootFD, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if fd == -ENOENT, mkdirat(rootFD, name, 0o755) == 0 {
            made = true
            fd = rb_open_in_root(rootFD, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        }
        guard fd >= 0 else { return nil }
        var st = stat()
        fstat(fd, &st)
        let rootFD = self.rootFD
        undo.append {
            defer { close(fd) }
            if made {
                unlinkat(rootFD, name, AT_REMOVEDIR)   // kept when the step put something in it
            } else {
                var times = [st.st_atim, st.st_mtim]
                futimens(fd, &times)
            }
        }
        return fd
    }

    /// Moves an existing `name` in `dir` aside (unless `keepExisting`), makes ours with `make`,
    /// and registers taking both back. A `make` that fails leaves the name empty.
    /// `make` returns nil, or why it failed (a failure throws when `required`, else the name
    /// stays empty); `takeBack` undoes it (default: remove what is at the name).
    private func replace(_ name: String, in dir: Int32, keepExisting: Bool = false, required: Bool = true,
                         make: (Int32, String) -> String?,
                         takeBack: (@Sendable (Int32, String) throws -> Void)? = nil) throws {
        var st = stat()
        let exists = fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0
        if exists && keepExisting { return }
        let saved = "\(undo.count)-\(name)"
        if exists {
            guard renameat(dir, name, asideFD, saved) == 0 else {
                throw RuntimeError(.spawnFailed, "cannot move \(name) aside in the root \(rootfs): \(errnoText(errno))")
            }
        }
        let asideFD = self.asideFD, rootfs = self.rootfs
        undo.append {
            // Whatever the step left at the name goes; the image's entry comes back.
            if let takeBack { try takeBack(dir, name) } else { try removeEntry(dir, name) }
            if exists, renameat(asideFD, saved, dir, name) != 0 {
                throw RuntimeError(.spawnFailed, "cannot put \(name) back in the root \(rootfs): \(errnoText(errno))")
            }
        }
        if let why = make(dir, name), required {
            throw RuntimeError(.setupFailed, "cannot put \(name) in place in the root \(rootfs) for a chroot run: \(why)")
        }
    }
}

/// Removes `name` in `dir` (a tree when it is a directory), never following a symlink.
private func removeEntry(_ dir: Int32, _ name: String) throws {
    var st = stat()
    guard fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        try removeTree(atPath: "/proc/self/fd/\(dir)/\(name)")
    } else if unlinkat(dir, name, 0) != 0 {
        throw RuntimeError(.spawnFailed, "cannot remove \(name) made during a chroot run: \(errnoText(errno))")
    }
}
