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
        if let m = spec.extraMounts.first { throw refuse("RUN --mount (on \(m.target))") }
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
            close(rootFD)
            rmdir(dir)
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
                try replace(name, in: etc) { dir, name in
                    let fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                    guard fd >= 0 else { return false }
                    defer { close(fd) }
                    fchmod(fd, 0o644)
                    return (try? writeAll(fd, content)) != nil
                }
            }
        }
        if let dev = try directory("dev") {
            for d in ChrootRoot.devices {
                try replace(d.name, in: dev) { dir, name in
                    guard mknodat(dir, name, S_IFCHR | 0o666, ChrootRoot.deviceNumber(d.major, d.minor)) == 0 else { return false }
                    return fchmodat(dir, name, 0o666, 0) == 0
                }
            }
            try replace("shm", in: dev, keepExisting: true) { dir, name in
                mkdirat(dir, name, 0o1777) == 0 && fchmodat(dir, name, 0o1777, 0) == 0
            }
        }
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
    private func replace(_ name: String, in dir: Int32, keepExisting: Bool = false,
                         make: (Int32, String) -> Bool) throws {
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
            try removeEntry(dir, name)
            if exists, renameat(asideFD, saved, dir, name) != 0 {
                throw RuntimeError(.spawnFailed, "cannot put \(name) back in the root \(rootfs): \(errnoText(errno))")
            }
        }
        _ = make(dir, name)
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
