#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import CSeccomp
import Foundation
import RBuildSystem

/// What this host allows an unprivileged rbuild to do, each answer with its reason
/// (`rbuild info`). Probes that need a namespace really create one: nothing is guessed from
/// version numbers alone.
public struct HostReport: Codable, Sendable {
    public struct Check: Codable, Sendable {
        public var name: String
        public var ok: Bool
        public var detail: String
    }
    public struct Interpreter: Codable, Sendable {
        public var architecture: String
        public var path: String
    }
    public struct HostHandler: Codable, Sendable {
        public var name: String
        public var enabled: Bool
        public var interpreter: String
        public var flags: String
    }

    public var kernel: String
    public var architecture: String
    public var user: String
    public var uid: UInt32
    public var idMapping: IDMappingMode
    public var idMappingReason: String
    public var uidRange: SubordinateRange?
    public var gidRange: SubordinateRange?
    public var checks: [Check]
    public var qemuInterpreters: [Interpreter]
    public var hostBinfmtHandlers: [HostHandler]
    /// Every platform rbuild knows, and how (or why not) this host runs its binaries.
    public var platforms: [PlatformSupport]
    /// The user-mode network helper behind RUN steps' own network.
    public var networkHelper: NetworkHelperReport
    /// How RUN steps are isolated here (`RBUILD_ISOLATION`, else the strongest that works), or
    /// nil and why none can be (`isolationProblem`).
    public var isolation: IsolationChoice?
    public var isolationProblem: String?

    public struct NetworkHelperReport: Codable, Sendable {
        /// The helper used; nil when none can be (`detail` says why and what to do).
        public var kind: NetworkHelper.Kind?
        public var path: String?
        public var version: String?
        public var detail: String
    }

    public struct PlatformSupport: Codable, Sendable {
        public var platform: String
        public var supported: Bool
        public var how: String
    }

    public func check(_ name: String) -> Check? { checks.first { $0.name == name } }

    /// Runs every probe. Takes a few milliseconds (three short-lived namespaces).
    public static func gather() -> HostReport {
        let kernel = KernelVersion.current
        let mapping = IDMapping.detect(force: ProcessInfo.processInfo.environment["RBUILD_IDMAP"].flatMap(IDMappingMode.init(rawValue:)))
        var checks: [Check] = []
        func add(_ name: String, _ ok: Bool, _ detail: String) { checks.append(Check(name: name, ok: ok, detail: detail)) }

        add("kernel", kernel >= KernelVersion(5, 12),
            kernel >= KernelVersion(5, 12) ? "Linux \(kernel) has open_tree, fsmount, mount_setattr and openat2 (5.12+)"
                : "Linux \(kernel) is older than 5.12: the sandbox needs open_tree, fsmount, mount_setattr and openat2")

        let userns = probe(.userns)
        let maxNS = (try? String(contentsOfFile: "/proc/sys/user/max_user_namespaces", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        add("user namespaces", userns == nil,
            userns.map { "cannot create one: \($0) (max_user_namespaces=\(maxNS); on Debian/Ubuntu check kernel.unprivileged_userns_clone and AppArmor's restrict_unprivileged_userns)" }
                ?? "an unprivileged user namespace can be created (max_user_namespaces=\(maxNS))")

        let ranges = mapping.uidRange != nil && mapping.gidRange != nil
        add("subordinate ids", ranges,
            ranges ? "uids \(mapping.uidRange!.start)+\(mapping.uidRange!.count), gids \(mapping.gidRange!.start)+\(mapping.gidRange!.count) from /etc/subuid and /etc/subgid"
                : "no range for this user in /etc/subuid and /etc/subgid: only uid 0 exists inside, so USER other than root cannot work")
        let tools = mapping.newuidmap != nil && mapping.newgidmap != nil
        add("newuidmap/newgidmap", tools,
            tools ? "\(mapping.newuidmap!), \(mapping.newgidmap!)" : "not found: install the uidmap package to use subordinate ranges")

        let overlay = probeOverlay()
        add("overlay in user namespace", overlay == nil,
            overlay.map { "kernel overlayfs with userxattr cannot be mounted: \($0)" } ?? "kernel overlayfs mounts inside a user namespace (userxattr)")

        let fuseBin = findExecutable("fuse-overlayfs")
        let devFuse = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        let fuseErr = devFuse < 0 ? errnoText(errno) : nil
        if devFuse >= 0 { close(devFuse) }
        add("fuse-overlayfs", fuseBin != nil && fuseErr == nil,
            [fuseBin.map { "program \($0)" } ?? "program not found (apt install fuse-overlayfs)",
             fuseErr.map { "/dev/fuse: \($0)" } ?? "/dev/fuse usable"].joined(separator: "; "))

        let binfmtKernel = kernel >= KernelVersion(6, 7)
        let binfmt = binfmtKernel ? probeBinfmt() : "needs Linux 6.7 or newer"
        add("binfmt_misc in user namespace", binfmt == nil,
            binfmt.map { "a private binfmt_misc cannot be mounted: \($0)" } ?? "each sandbox can register qemu for itself (Linux 6.7+)")

        let qemu = findQemuInterpreters()
        add("qemu-user-static", !qemu.isEmpty,
            qemu.isEmpty ? "no /usr/bin/qemu-*-static: apt install qemu-user-static for other platforms"
                : qemu.map(\.architecture).joined(separator: ", "))

        let handlers = hostBinfmtHandlers()
        let enabled = handlers.filter(\.enabled)
        add("host binfmt handlers", !enabled.isEmpty,
            enabled.isEmpty ? "none registered on the host (not needed with binfmt_misc in a user namespace)"
                : enabled.map(\.name).joined(separator: ", "))

        let seccompField = ((try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? "").contains("\nSeccomp:")
        let v = seccomp_version()!.pointee
        add("seccomp", seccompField,
            seccompField ? "filters supported; libseccomp \(v.major).\(v.minor).\(v.micro)" : "the kernel has no seccomp filter support (CONFIG_SECCOMP_FILTER)")

        let (cgOK, cgDetail) = cgroupDelegation()
        add("cgroup v2 delegation", cgOK, cgDetail)

        let network = networkHelperReport()
        add("network helper", network.kind != nil, network.detail)

        var isolation: IsolationChoice?, isolationProblem: String?
        do {
            isolation = try Isolation.choose()
        } catch let e as RuntimeError {
            isolationProblem = e.message
        } catch {
            isolationProblem = String(describing: error)
        }

        var uts = utsname()
        uname(&uts)
        let machine = withUnsafeBytes(of: &uts.machine) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        return HostReport(kernel: kernel.description, architecture: machine, user: userName(uid: getuid()), uid: getuid(),
                          idMapping: mapping.mode, idMappingReason: mapping.reason,
                          uidRange: mapping.uidRange, gidRange: mapping.gidRange, checks: checks,
                          qemuInterpreters: qemu, hostBinfmtHandlers: handlers,
                          platforms: Architecture.allCases.map { arch in
                              do {
                                  let mode = try Emulation.mode(for: arch, kernel: kernel)
                                  if case .userNamespaceBinfmt = mode, binfmt != nil {
                                      return PlatformSupport(platform: arch.platform, supported: false,
                                                             how: "needs binfmt_misc in a user namespace: \(binfmt!)")
                                  }
                                  return PlatformSupport(platform: arch.platform, supported: true, how: mode.summary)
                              } catch {
                                  return PlatformSupport(platform: arch.platform, supported: false, how: String(describing: error))
                              }
                          }, networkHelper: network, isolation: isolation, isolationProblem: isolationProblem)
    }

    /// Which helper RUN steps' own network uses (`NetworkHelper.current`), its version, and
    /// the other one when both are installed; or why there is none.
    static func networkHelperReport() -> NetworkHelperReport {
        switch NetworkHelper.current {
        case .failure(let e):
            return NetworkHelperReport(kind: nil, path: nil, version: nil, detail: e.message)
        case .success(let helper):
            let version = helper.version()
            let forced = ProcessInfo.processInfo.environment[NetworkHelper.forceVariable].map { _ in ", chosen by \(NetworkHelper.forceVariable)" } ?? ""
            var detail = "\(helper.kind.rawValue) \(version ?? "(version unknown)") at \(helper.path)\(forced): RUN steps get a network namespace of their own with outbound access through it, the host's loopback out of reach"
            if let other = NetworkHelper.Kind.allCases.first(where: { $0 != helper.kind }), let path = findExecutable(other.rawValue) {
                detail += "; \(other.rawValue) at \(path) is installed too"
            }
            return NetworkHelperReport(kind: helper.kind, path: helper.path, version: version, detail: detail)
        }
    }

    enum ProbeKind { case userns, overlay, binfmt, proc }

    /// Creates namespaces for a probe, maps ids as single-id mode would, runs `mounts` in the
    /// child, and returns nil on success or the failure's text.
    static func probe(_ kind: ProbeKind, mounts: [MountStep] = []) -> String? {
        let arena = CArena()
        var plan = rb_plan()
        plan.stdio = (-1, -1, -1)
        switch kind {
        case .userns:
            plan.probe = Int32(RB_PROBE_USERNS.rawValue)
            plan.clone_flags = UInt(RB_CLONE_NEWUSER.rawValue)
        case .overlay, .binfmt:
            plan.probe = Int32(kind == .overlay ? RB_PROBE_OVERLAY.rawValue : RB_PROBE_BINFMT.rawValue)
            plan.clone_flags = UInt(RB_CLONE_NEWUSER.rawValue | RB_CLONE_NEWNS.rawValue)
        case .proc:
            // Mounting a procfs needs the pid namespace it shows: the probe's own.
            plan.probe = Int32(RB_PROBE_PROC.rawValue)
            plan.clone_flags = UInt(RB_CLONE_NEWUSER.rawValue | RB_CLONE_NEWNS.rawValue | RB_CLONE_NEWPID.rawValue)
        }
        plan.mounts = try! arena.mounts(mounts)   // probe steps carry no file content
        plan.nmounts = mounts.count
        var mapping = IDMapping.detect(force: .single)
        if getuid() == 0 && !mapping.nested { mapping.mode = .root }
        do {
            let outcome = try Sandbox.spawnAndWait(&plan, mapping: mapping)
            withExtendedLifetime(arena) {}
            if let r = outcome.report { return errnoText(r.err) }
            return outcome.exitCode == 0 ? nil : "probe exited with status \(outcome.exitCode)"
        } catch {
            return String(describing: error)
        }
    }

    /// nil when an overlay with userxattr can be mounted in a new user namespace, else why not.
    /// `directory` nil: in a temporary directory.
    public static func probeOverlayInUserNamespace(in directory: String? = nil) -> String? { probeOverlay(in: directory) }

    static func probeOverlay(in directory: String? = nil) -> String? {
        guard let dir = try? ScratchDir(in: directory) else { return "cannot create a scratch directory" }
        defer { for d in ["merged", "work/work", "work", "upper", "lower"] { rmdir(dir.path + "/" + d) } }
        for d in ["lower", "upper", "work", "merged"] { mkdir(dir.path + "/" + d, 0o755) }
        let step = MountStep(kind: .fs, options: [], source: nil, target: dir.path + "/merged", fstype: "overlay",
                             data: "lowerdir=\(dir.path)/lower,upperdir=\(dir.path)/upper,workdir=\(dir.path)/work,userxattr",
                             flags: 0)
        return probe(.overlay, mounts: [step])
    }

    /// nil when a fresh procfs can be mounted in a new user, mount and pid namespace (what the
    /// sandbox isolation needs), else why not.
    static func probeProcInUserNamespace() -> String? {
        guard let dir = try? ScratchDir() else { return "cannot create a scratch directory" }
        defer { rmdir(dir.path + "/proc") }
        mkdir(dir.path + "/proc", 0o755)
        let step = MountStep(kind: .fs, options: [], source: nil, target: dir.path + "/proc", fstype: "proc",
                             data: nil, flags: 0)
        return probe(.proc, mounts: [step])
    }

    static func probeBinfmt() -> String? {
        guard let dir = try? ScratchDir() else { return "cannot create a scratch directory" }
        defer { rmdir(dir.path + "/binfmt") }
        mkdir(dir.path + "/binfmt", 0o755)
        let step = MountStep(kind: .fs, options: [], source: nil, target: dir.path + "/binfmt", fstype: "binfmt_misc",
                             data: nil, flags: 0)
        return probe(.binfmt, mounts: [step])
    }

    /// qemu-user-static's interpreters, by the architecture name qemu uses.
    public static func findQemuInterpreters(directories: [String] = ["/usr/bin", "/usr/local/bin"]) -> [Interpreter] {
        var found: [String: String] = [:]
        for dir in directories {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            for n in names where n.hasPrefix("qemu-") && n.hasSuffix("-static") {
                let arch = String(n.dropFirst(5).dropLast(7))
                if found[arch] == nil && access(dir + "/" + n, X_OK) == 0 { found[arch] = dir + "/" + n }
            }
        }
        return found.keys.sorted().map { Interpreter(architecture: $0, path: found[$0]!) }
    }

    static func hostBinfmtHandlers(dir: String = "/proc/sys/fs/binfmt_misc") -> [HostHandler] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return names.filter { $0 != "register" && $0 != "status" }.sorted().compactMap { name in
            guard let text = try? String(contentsOfFile: dir + "/" + name, encoding: .utf8) else { return nil }
            var interpreter = "", flags = ""
            for line in text.split(separator: "\n") {
                if line.hasPrefix("interpreter ") { interpreter = String(line.dropFirst(12)) }
                if line.hasPrefix("flags: ") { flags = String(line.dropFirst(7)) }
            }
            return HostHandler(name: name, enabled: text.hasPrefix("enabled"), interpreter: interpreter, flags: flags)
        }
    }

    static func cgroupDelegation() -> (Bool, String) {
        guard FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") else {
            return (false, "the host uses cgroup v1 (or a hybrid hierarchy): resource limits for steps are not available")
        }
        let own = ((try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? "")
            .split(separator: "\n").first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) } ?? "/"
        let path = "/sys/fs/cgroup" + own
        guard access(path, W_OK) == 0 else {
            return (false, "cgroup v2, but \(path) is not writable by this user (systemd delegates it with `systemd-run --user -p Delegate=yes`)")
        }
        let controllers = ((try? String(contentsOfFile: path + "/cgroup.controllers", encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return (true, "cgroup v2 at \(path), controllers: \(controllers.isEmpty ? "none" : controllers)")
    }
}
