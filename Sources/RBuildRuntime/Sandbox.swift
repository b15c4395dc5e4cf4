#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import Foundation
import RBuildSystem

/// Runs one process in new user, mount, pid, ipc, uts and cgroup namespaces (and a network
/// namespace of its own unless it uses the host's network), rootless.
///
/// The parent side lives here: deciding the id mapping, preparing the mount plan and the seccomp
/// program, writing the child's id maps, and supervising. The child side is `CRBuildChild`.
/// Calls block the calling thread (clone, waitpid): call them from a thread of your own, never
/// from a Swift concurrency executor.
public enum Sandbox {
    /// From now on SIGINT and SIGTERM kill every running sandbox (not forwarding) and are
    /// remembered for `interruptedBy` (a build stops then, cleans up and exits).
    public static func killSandboxesOnInterrupt() { rb_install_interrupt_handler() }

    /// The signal that interrupted this process since `killSandboxesOnInterrupt`, or 0.
    public static var interruptedBy: Int32 { rb_interrupted() }

    /// Docker's default PATH, used when the environment has none.
    public static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// Runs `spec` to completion with stdin/stdout/stderr passed through, and returns the exit
    /// status the command ended with (128+N when signal N killed it).
    public static func run(_ spec: SandboxSpec) throws -> Int32 {
        let isolation = try Isolation.choose(spec.isolation).isolation
        if isolation != .sandbox { Isolation.protectBuilder() }
        let rootfs = try resolveRootfs(spec.rootfs)
        if isolation == .chroot { return try runChrooted(spec, rootfs: rootfs) }
        let envForce = ProcessInfo.processInfo.environment["RBUILD_IDMAP"].flatMap(IDMappingMode.init(rawValue:))
        let mapping = IDMapping.detect(force: spec.idMapping ?? envForce)
        var userRoots = [rootfs]
        if let overlay = spec.overlay {
            try checkOverlay(overlay)
            userRoots = (overlay.tmpfsDir == nil ? [overlay.upperDir].compactMap { $0 } : []) + overlay.lowerDirs
        }
        let user = try spec.readRootFile.map { try UserDatabase.resolve(spec.user, reading: $0) }
            ?? UserDatabase.resolve(spec.user, roots: userRoots)
        try checkMapped(user: user, spec: spec, mapping: mapping)
        for m in spec.mounts where !pathExists(m.source) {
            throw RuntimeError(.badMount, "invalid --mount: source \(m.source) does not exist")
        }
        for m in spec.extraMounts {
            switch m {
            case .bind(let source, _, let target, _) where !pathExists(source):
                throw RuntimeError(.badMount, "cannot mount \(source) on \(target): it does not exist")
            case .root(let root, _, _, _, _):
                if let overlay = root.overlay { try checkOverlay(overlay) }
            case .file(let target, _, let uid, let gid, _) where uid > mapping.maxInsideUID || gid > mapping.maxInsideGID:
                throw RuntimeError(.userNotMapped, "cannot give \(target) to \(uid):\(gid): only ids up to \(mapping.maxInsideUID) exist in the sandbox (\(mapping.mode.rawValue) id mapping; `rbuild info` says why)")
            default: break
            }
        }
        // Before anything is made: without a helper (or /dev/net/tun) the error says what to install.
        let networkHelper = spec.network == .isolated ? try NetworkHelper.current.get() : nil

        var registration: String?
        if case .userNamespaceBinfmt(let interpreter) = try Emulation.mode(for: spec.architecture) {
            registration = spec.architecture.binfmtRegistration(interpreter: interpreter)
        }

        let scratch = try ScratchDir()
        let etcFiles = try scratch.writeEtcFiles(hostname: spec.hostname, network: spec.network, helper: networkHelper?.kind,
                                                 extraHosts: spec.extraHosts)
        let steps = MountPlan.build(spec: spec, etcFiles: etcFiles, ttyGroupMapped: mapping.maxInsideGID >= 5,
                                    binfmtRegistration: registration, ownProc: isolation == .sandbox)
        // A root the user cannot write that lacks a mount point runs as a throw-away overlay.
        var overlay = spec.overlay
        var mountRoot = rootfs
        var skeleton: [String]?
        if overlay == nil, let entries = MountPlan.readOnlyRootSkeleton(rootfs: rootfs, steps: steps, workdir: spec.workdir,
                                                                                mapping: mapping) {
            mountRoot = try scratch.makeDirectory("root")
            overlay = .throwaway(lowerDirs: [rootfs], scratch: try scratch.makeDirectory("upper"))
            skeleton = entries
        }

        // Only id 0 exists in single-id mode: id changes a package manager makes are faked (see
        // SeccompProfile.idChangingSyscalls); with a range they are real.
        let program = try seccompProgram(spec, fakeIDs: mapping.mode == .single, crossProcess: isolation == .sandbox)

        var flags = RB_CLONE_NEWUSER.rawValue | RB_CLONE_NEWNS.rawValue
            | RB_CLONE_NEWIPC.rawValue | RB_CLONE_NEWUTS.rawValue | RB_CLONE_NEWCGROUP.rawValue
        if isolation == .sandbox { flags |= RB_CLONE_NEWPID.rawValue }
        if spec.network.hasOwnNamespace { flags |= RB_CLONE_NEWNET.rawValue }

        let arena = CArena()
        var plan = try commonPlan(spec, root: mountRoot, user: user, mapping: mapping, program: program, arena: arena)
        plan.hostname = arena.string(spec.hostname)
        plan.new_netns = spec.network.hasOwnNamespace ? 1 : 0
        plan.readonly_root = spec.readOnlyRoot ? 1 : 0
        plan.mounts = try arena.mounts(steps)
        plan.nmounts = steps.count
        plan.clone_flags = UInt(flags)
        plan.console = spec.terminal == nil ? 0 : 1
        // fuse-overlayfs daemons (the root's, a mounted snapshot's) run chrooted in a bind of
        // the host root (see rb_plan.fuse_argv).
        let hostRoot = scratch.path + "/hostroot"
        if overlay?.fuseProgram != nil || steps.contains(where: { $0.overlay?.fuseProgram != nil }) {
            try FileManager.default.createDirectory(atPath: hostRoot, withIntermediateDirectories: false)
            plan.fuse_hostroot = arena.string(hostRoot)
            for (i, step) in steps.enumerated() {
                guard let o = step.overlay, let program = o.fuseProgram, let mountPoint = step.source else { continue }
                plan.mounts[i].fuse_argv = arena.stringArray([program, "-o", fuseOptions(o), mountPoint])
                plan.mounts[i].fuse_seen = arena.string(hostRoot + mountPoint)
            }
        }
        if let overlay {
            plan.overlay_skeleton = skeleton.map(arena.stringArray)
            plan.overlay_lowers = arena.stringArray(overlay.lowerDirs)
            plan.overlay_upper = overlay.upperDir.map(arena.string)
            plan.overlay_work = overlay.workDir.map(arena.string)
            // "lowerdir+" takes one layer per call with no length limit (Linux 6.8); the joined
            // form is bounded by a page, about 50 layers of typical paths.
            plan.overlay_lowerdir_plus = KernelVersion.current >= KernelVersion(6, 8) ? 1 : 0
            plan.overlay_lowerdir = arena.string(overlay.joinedLowerDirs)
            plan.overlay_tmpfs = overlay.tmpfsDir.map(arena.string)
            if let program = overlay.fuseProgram {
                plan.fuse_argv = arena.stringArray([program, "-o", fuseOptions(overlay), mountRoot])
                plan.fuse_rootfs = arena.string(hostRoot + mountRoot)
            }
        }

        let outcome = try spawnAndWait(&plan, mapping: mapping, forwardSignals: spec.forwardSignals, terminal: spec.terminal,
                                       network: networkHelper.map { helper in { pid in try helper.attach(to: pid, scratch: scratch.path) } })
        withExtendedLifetime(arena) {}
        withExtendedLifetime(scratch) {}
        if let report = outcome.report {
            throw describe(report, steps: steps, spec: spec, rootfs: rootfs, pathSearch: searchPath(plan))
        }
        return outcome.exitCode
    }

    /// The seccomp program for `spec` (nil: unconfined).
    static func seccompProgram(_ spec: SandboxSpec, fakeIDs: Bool, crossProcess: Bool) throws -> SeccompProgram? {
        switch spec.seccomp {
        case .unconfined: return nil
        case .default:
            return try seccompProgramForSandbox(profile: nil, capabilities: spec.capabilities, fakeIDChanges: fakeIDs, crossProcess: crossProcess)
        case .profile(let p):
            return try seccompProgramForSandbox(profile: p, capabilities: spec.capabilities, fakeIDChanges: fakeIDs, crossProcess: crossProcess)
        }
    }

    /// The parts of a plan every isolation fills alike: the command, its environment (with
    /// Docker's defaults), identity, limits, capabilities, filter and stdio.
    static func commonPlan(_ spec: SandboxSpec, root: String, user: ResolvedUser, mapping: IDMapping,
                           program: SeccompProgram?, arena: CArena) throws -> rb_plan {
        var env = spec.env
        func setDefault(_ key: String, _ value: String) {
            if !env.contains(where: { $0.hasPrefix(key + "=") }) { env.append(key + "=" + value) }
        }
        setDefault("PATH", defaultPath)
        setDefault("HOSTNAME", spec.hostname)
        setDefault("HOME", user.home)
        if spec.terminal != nil { setDefault("TERM", "xterm") }
        let pathSearch = env.last(where: { $0.hasPrefix("PATH=") }).map { String($0.dropFirst(5)) } ?? defaultPath

        var plan = rb_plan()
        plan.rootfs = arena.string(root)
        plan.argv = arena.stringArray(spec.argv)
        plan.envp = arena.stringArray(env)
        plan.path_search = arena.string(pathSearch)
        plan.workdir = arena.string(spec.workdir)
        plan.uid = user.uid
        plan.gid = user.gid
        let groups = user.groups.filter { $0 <= mapping.maxInsideGID }
        plan.groups = UnsafePointer(arena.array(groups))
        plan.ngroups = groups.count
        // setgroups(2) is denied in single-id mode (we had to write "deny" to map our gid).
        plan.set_groups = mapping.mode == .single ? 0 : 1
        // `--ulimit` replaces the default of the limits it names.
        let asked = Set(spec.ulimits.map(\.resource))
        let limits = defaultRlimits().filter { !asked.contains(Int32($0.resource)) } + spec.ulimits.map(\.plan)
        plan.rlimits = UnsafePointer(arena.array(limits))
        plan.nrlimits = limits.count
        plan.capabilities = spec.capabilities.mask
        plan.last_cap = Int32(CapabilitySet.lastCap)
        if let program, !program.bytes.isEmpty {
            plan.bpf = UnsafeRawPointer(arena.array(program.bytes))
            plan.bpf_len = UInt16(program.instructionCount)
            plan.fake_ids = program.notifies ? 1 : 0
        }
        plan.stdio = (spec.stdin ?? -1, spec.stdout ?? -1, spec.stderr ?? -1)
        return plan
    }

    static func searchPath(_ plan: rb_plan) -> String {
        plan.path_search.map { String(cString: $0) } ?? defaultPath
    }

    /// fuse-overlayfs's `-o` for an overlay root.
    static func fuseOptions(_ overlay: OverlayRoot) -> String {
        var options = "lowerdir=" + overlay.lowerDirs.joined(separator: ":")
        if let upper = overlay.upperDir, let work = overlay.workDir {
            options += ",upperdir=\(upper),workdir=\(work)"
        }
        // allow_other: in subuid mode a RUN step's USER is another uid than the mounter.
        return options + ",allow_other"
    }

    struct Outcome {
        var exitCode: Int32
        var report: rb_report?
    }

    /// clone → write id maps → let the child prepare its root while its network is connected
    /// (`network`: start the helper on the child's pid and wait until it is ready) → let the
    /// child start the command → collect its report → reap it → stop the helper.
    static func spawnAndWait(_ plan: inout rb_plan, mapping: IDMapping, forwardSignals: Bool = false,
                             terminal: TerminalAttachment? = nil,
                             network: ((pid_t) throws -> NetworkAttachment)? = nil,
                             spawned: (() -> Void)? = nil) throws -> Outcome {
        if mapping.mode == .host {
            // No user namespace can be made here: what a task or probe does from one, rbuild
            // (root) does itself.
            plan.clone_flags &= ~UInt(RB_CLONE_NEWUSER.rawValue)
        }
        var child = rb_child()
        let rc = rb_spawn(&plan, &child)
        if rc < 0 {
            let hint = rc == -EPERM || rc == -ENOSPC
                ? " (are unprivileged user namespaces enabled? see `rbuild info`)" : ""
            throw RuntimeError(.spawnFailed, "cannot create the sandbox namespaces: clone: \(errnoText(-rc))\(hint)")
        }
        spawned?()
        // Answers the id calls from the moment the child loads its filter (single-id mode).
        let fakeIDs = child.notify_fd >= 0 ? FakeIDs(socket: child.notify_fd) : nil
        var attachment: NetworkAttachment?
        // After the sandbox is reaped, and on every way out: the helper never outlives it.
        defer { attachment?.stop() }
        do {
            try mapping.apply(to: child.pid)
            // The helper joins the child's user and network namespaces: the id maps come first
            // (it needs a mapped root there), the command only once its network is up. The
            // helper's start (about 4 ms for slirp4netns) and the child's mounts overlap: the
            // first byte lets the child prepare its root, the second lets it start the command.
            if let network {
                _ = rb_release(child.sync_fd, 1)
                attachment = try network(child.pid)
            }
        } catch {
            kill(child.pid, SIGKILL)
            close(child.sync_fd)
            if child.console_fd >= 0 { close(child.console_fd) }
            fakeIDs?.stop()
            var status: Int32 = 0
            _ = rb_waitpid(child.pid, &status)
            // A child that failed while preparing its root took its network namespace with it,
            // and so failed the helper: its own report says what went wrong.
            var report = rb_report()
            let got = rb_read_report(child.status_fd, &report)
            close(child.status_fd)
            if got == 1 { return Outcome(exitCode: 125, report: report) }
            throw error
        }
        // A child that failed already sees no byte; its report below says why.
        _ = rb_release(child.sync_fd, network == nil ? 2 : 1)
        close(child.sync_fd)

        if forwardSignals {
            rb_forward_signals(child.pid)
            // A Ctrl-C that came while the sandbox was being prepared (recorded by
            // `killSandboxesOnInterrupt`'s handler) is passed on now, not lost.
            let pending = rb_interrupted()
            if pending != 0 { kill(child.pid, pending) }
        } else {
            rb_track_sandbox(child.pid, 1)
        }
        defer { if forwardSignals { rb_forward_signals(0) } else { rb_track_sandbox(child.pid, 0) } }
        // The terminal's master arrives once the sandbox made it (EOF: it failed before).
        var console: ConsoleRelay?
        if child.console_fd >= 0 {
            let master = rb_recv_fd(child.console_fd)
            close(child.console_fd)
            if master >= 0, let terminal { console = ConsoleRelay(master: master, attachment: terminal) }
        }
        var report = rb_report()
        let got = rb_read_report(child.status_fd, &report)
        close(child.status_fd)
        var status: Int32 = 0
        let w = rb_waitpid(child.pid, &status)
        fakeIDs?.stop()
        console?.finish()
        if w < 0 {
            throw RuntimeError(.spawnFailed, "waiting for the sandbox failed: \(errnoText(-w))")
        }
        let code: Int32 = rb_wifexited(status) != 0 ? rb_wexitstatus(status)
            : rb_wifsignaled(status) != 0 ? 128 + rb_wtermsig(status) : 255
        return Outcome(exitCode: code, report: got == 1 ? report : nil)
    }

    static func resolveRootfs(_ path: String) throws -> String {
        guard let real = realpath(path, nil) else {
            throw RuntimeError(.rootfsNotFound, "root filesystem \(path) not found: \(errnoText(errno))")
        }
        defer { free(real) }
        let s = String(cString: real)
        guard isDirectory(s) else {
            throw RuntimeError(.rootfsNotFound, "root filesystem \(path) is not a directory")
        }
        return s
    }

    static func checkOverlay(_ o: OverlayRoot) throws {
        guard !o.lowerDirs.isEmpty else {
            throw RuntimeError(.badOption, "an overlay root needs at least one lower directory")
        }
        let made = o.tmpfsDir == nil ? [o.upperDir, o.workDir].compactMap({ $0 }) : [o.tmpfsDir!]
        for d in o.lowerDirs + made where !isDirectory(d) {
            throw RuntimeError(.rootfsNotFound, "overlay directory \(d) does not exist")
        }
        if (o.upperDir == nil) != (o.workDir == nil) {
            throw RuntimeError(.badOption, "an overlay root needs both an upper and a work directory, or neither")
        }
        if let program = o.fuseProgram {
            guard access(program, X_OK) == 0 else {
                throw RuntimeError(.badOption, "\(program) is not an executable: install fuse-overlayfs (apt install fuse-overlayfs) or choose another snapshotter")
            }
            // fuse-overlayfs takes its directories in one -o string: ',' and ':' would split it.
            for d in o.lowerDirs + [o.upperDir, o.workDir].compactMap({ $0 }) where d.contains(",") || d.contains(":") {
                throw RuntimeError(.badOption, "fuse-overlayfs cannot use \(d): the path holds ',' or ':'; move the state directory (--root)")
            }
        }
    }

    static func checkMapped(user: ResolvedUser, spec: SandboxSpec, mapping: IDMapping) throws {
        guard user.uid > mapping.maxInsideUID || user.gid > mapping.maxInsideGID else { return }
        let what = user.uid > mapping.maxInsideUID ? "uid \(user.uid)" : "gid \(user.gid)"
        let who = spec.user.group.map { "\(spec.user.user):\($0)" } ?? spec.user.user
        switch mapping.mode {
        case .single:
            throw RuntimeError(.userNotMapped,
                "--user \(who): \(what) does not exist in the sandbox: without a subordinate id range only uid 0 (you) is mapped. "
                + "Give your user a range (`sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 \(userName(uid: getuid()))`) "
                + "and install uidmap (newuidmap/newgidmap); `rbuild info` shows what is found")
        default:
            throw RuntimeError(.userNotMapped,
                "--user \(who): \(what) is outside the mapped range 0-\(min(mapping.maxInsideUID, mapping.maxInsideGID)); "
                + "enlarge the ranges in /etc/subuid and /etc/subgid")
        }
    }

    /// RLIMIT_NOFILE's soft limit raised to the hard one, as container engines do (many build
    /// tools open more files than a login shell's 1024).
    static func defaultRlimits() -> [rb_rlimit] {
        var rl = rlimit()
        let nofile = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(nofile, &rl) == 0 else { return [] }
        return [rb_rlimit(resource: nofile, soft: UInt64(rl.rlim_max), hard: UInt64(rl.rlim_max))]
    }

    static func describe(_ r: rb_report, steps: [MountStep], spec: SandboxSpec, rootfs: String, pathSearch: String) -> RuntimeError {
        let err = r.err
        let item = Int(r.item)
        if r.stage == RB_STAGE_EXEC.rawValue {
            let cmd = spec.argv.first ?? ""
            switch err {
            case ENOENT where item == 1:
                return RuntimeError(.executableNotFound, "executable file not found in $PATH (\(pathSearch)): \(cmd)", exitCode: 127)
            case ENOENT:
                return RuntimeError(.executableNotFound, "executable file not found in rootfs: \(cmd)", exitCode: 127)
            case EACCES:
                return RuntimeError(.notExecutable, "permission denied: cannot execute \(cmd) in rootfs \(rootfs)", exitCode: 126)
            case ENOEXEC:
                return RuntimeError(.notExecutable, "exec format error: \(cmd) is not a \(spec.architecture.platform) program (is the root filesystem for another platform? pass --platform)", exitCode: 126)
            default:
                return RuntimeError(.notExecutable, "cannot execute \(cmd): \(errnoText(err))", exitCode: 126)
            }
        }
        var stage: String
        switch UInt32(r.stage) {
        case RB_STAGE_WAIT_IDMAP.rawValue: stage = "waiting for the id maps"
        case RB_STAGE_WAIT_GO.rawValue: stage = "waiting for its network"
        case RB_STAGE_MOUNT_PRIVATE.rawValue: stage = "making mounts private"
        case RB_STAGE_ROOTFS_BIND.rawValue: stage = "bind-mounting the rootfs"
        case RB_STAGE_PREPARE_MOUNT.rawValue:
            stage = "preparing " + (steps.indices.contains(item) ? steps[item].description : "mount \(item)")
        case RB_STAGE_PIVOT_ROOT.rawValue: stage = "pivot_root"
        case RB_STAGE_MOUNT.rawValue:
            stage = steps.indices.contains(item) ? steps[item].description : "mount \(item)"
        case RB_STAGE_MOUNT_TARGET.rawValue:
            stage = "creating mount point " + (steps.indices.contains(item) ? steps[item].target : "\(item)")
        case RB_STAGE_HOSTNAME.rawValue: stage = "sethostname"
        case RB_STAGE_LOOPBACK.rawValue: stage = "bringing up loopback"
        case RB_STAGE_READONLY_ROOT.rawValue: stage = "making the root read-only"
        case RB_STAGE_RLIMIT.rawValue: stage = "setrlimit"
        case RB_STAGE_WORKDIR.rawValue: stage = "entering workdir \(spec.workdir)"
        case RB_STAGE_SETGROUPS.rawValue: stage = "setgroups"
        case RB_STAGE_SETGID.rawValue: stage = "setgid \(item)"
        case RB_STAGE_SETUID.rawValue: stage = "setuid \(item)"
        case RB_STAGE_CAPABILITIES.rawValue: stage = "dropping capabilities"
        case RB_STAGE_NO_NEW_PRIVS.rawValue: stage = "no_new_privs"
        case RB_STAGE_CLOSE_FDS.rawValue: stage = "closing inherited file descriptors"
        case RB_STAGE_SECCOMP.rawValue: stage = "loading the seccomp filter"
        case RB_STAGE_FORK.rawValue: stage = "starting the command"
        case RB_STAGE_FUSE.rawValue:
            switch item {
            case -1: stage = "binding the host root for fuse-overlayfs"
            case -2: stage = "starting fuse-overlayfs"
            default:
                stage = "mounting the root with \(spec.overlay?.fuseProgram ?? "fuse-overlayfs") (it exited with status \(item); is /dev/fuse readable and writable by you?)"
            }
        case RB_STAGE_OVERLAY.rawValue:
            let layer = item >= 0 ? " (lower directory \(spec.overlay?.lowerDirs[safe: item] ?? String(item)))" : ""
            stage = item == -11 ? "making the mount points \(rootfs) lacks in its throw-away overlay (it is not writable)"
                : "mounting the overlay root\(layer)"
        case RB_STAGE_SESSION.rawValue: stage = "starting a session of its own (setsid)"
        case RB_STAGE_CHROOT.rawValue: stage = item == 0 ? "chroot into the root" : "becoming the subreaper of the step's processes"
        case RB_STAGE_CONSOLE.rawValue:
            stage = ["opening a terminal in the sandbox's /dev/pts", "unlocking the terminal", "opening the terminal's peer",
                     "giving the terminal to the command's user", "handing the terminal over", "making the terminal the command's"][safe: item]
                ?? "making the terminal"
        case RB_STAGE_BINFMT.rawValue:
            stage = "registering the \(spec.architecture.platform) emulator in the sandbox's binfmt_misc"
        default: stage = "stage \(r.stage)"
        }
        var hint = ""
        if err == ENOSYS { hint = "; rbuild needs Linux 5.12 or newer (open_tree, fsmount, mount_setattr, openat2)" }
        return RuntimeError(.setupFailed, "sandbox setup failed at \(stage): \(errnoText(err)) (rootfs \(rootfs))\(hint)")
    }
}

/// C memory for one rb_plan; freed when the arena goes away (after the child is reaped).
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit {
        blocks.forEach { free($0) }
        fds.forEach { close($0) }
    }

    func string(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }

    func stringArray(_ items: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        let p = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: items.count + 1)
        for (i, s) in items.enumerated() { p[i] = string(s) }
        p[items.count] = nil
        blocks.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }

    func array<T>(_ items: [T]) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(items.count, 1))
        _ = UnsafeMutableBufferPointer(start: p, count: items.count).initialize(from: items)
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    /// The steps as the C child reads them; a file step's bytes go into a memfd that the arena
    /// closes with the rest.
    func mounts(_ steps: [MountStep]) throws -> UnsafeMutablePointer<rb_mount> {
        array(try steps.map { s in
            var m = rb_mount()
            m.kind = s.kind.rawValue
            m.mflags = s.options.rawValue
            m.source = s.source.map(string)
            m.target = string(s.target)
            m.fstype = s.fstype.map(string)
            m.data = s.data.map(string)
            m.flags = s.flags
            m.fd = -1
            m.content_fd = -1
            m.subpath = s.subpath.flatMap { $0.isEmpty || $0 == "/" ? nil : string($0) }
            if let o = s.overlay {
                m.lowers = stringArray(o.lowerDirs)
                m.lowerdir = string(o.joinedLowerDirs)
                m.upper = o.upperDir.map(string)
                m.work = o.workDir.map(string)
                m.tmpfs = o.tmpfsDir.map(string)
            }
            if let content = s.content {
                m.content_fd = try memfd(content)
                m.uid = s.owner.uid
                m.gid = s.owner.gid
                m.mode = UInt32(s.owner.mode)
            }
            return m
        })
    }

    private var fds: [Int32] = []

    /// An anonymous in-memory file holding `bytes`, closed with the arena.
    func memfd(_ bytes: [UInt8]) throws -> Int32 {
        let fd = rb_memfd("rbuild-mount")
        guard fd >= 0 else { throw RuntimeError(.spawnFailed, "memfd_create: \(errnoText(-fd))") }
        fds.append(fd)
        do {
            try writeAll(fd, bytes)
        } catch {
            throw RuntimeError(.spawnFailed, "writing a mounted file into memory: \(error)")
        }
        return fd
    }
}

/// A private directory for the files bound into one sandbox (/etc/hosts…), removed afterwards.
final class ScratchDir {
    let path: String

    /// In `directory`, else XDG_RUNTIME_DIR, TMPDIR or /tmp.
    init(in directory: String? = nil) throws {
        let base = directory ?? ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"].flatMap { isDirectory($0) && access($0, W_OK) == 0 ? $0 : nil }
            ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        guard let p = makeTemporaryDirectory(prefix: base + "/rbuild-run-") else {
            throw RuntimeError(.spawnFailed, "cannot create a scratch directory in \(base): \(errnoText(errno))")
        }
        path = p
    }

    deinit {
        for name in ["hosts", "hostname", "resolv.conf", "pasta.ready"] { unlink(path + "/" + name) }
        // Mount points only: what is mounted on them lives in the sandbox's mount namespace.
        for name in ["root", "upper", "hostroot"] { rmdir(path + "/" + name) }
        rmdir(path)
    }

    /// An empty directory in the scratch directory.
    func makeDirectory(_ name: String) throws -> String {
        let dir = path + "/" + name
        guard mkdir(dir, 0o700) == 0 else {
            throw RuntimeError(.spawnFailed, "cannot create \(dir): \(errnoText(errno))")
        }
        return dir
    }

    func writeEtcFiles(hostname: String, network: NetworkMode, helper: NetworkHelper.Kind?,
                       extraHosts: [ExtraHost]) throws -> [(target: String, source: String)] {
        let hosts = EtcFiles.hosts(hostname: hostname, extraHosts: extraHosts)
        var hostResolvConf = ""
        if network != .none {
            // systemd-resolved's /etc/resolv.conf names only its stub on the host's 127.0.0.53;
            // its upstream file has the real servers, and the search domains too.
            hostResolvConf = (try? String(contentsOfFile: "/run/systemd/resolve/resolv.conf", encoding: .utf8))
                ?? (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        }
        let resolv = EtcFiles.resolvConf(network: network, helper: helper, host: hostResolvConf)
        let files = [("/etc/hosts", "hosts", hosts), ("/etc/hostname", "hostname", hostname + "\n"),
                     ("/etc/resolv.conf", "resolv.conf", resolv)]
        return try files.map { target, name, text in
            let file = path + "/" + name
            do {
                try writeNewFile(file, Array(text.utf8))
            } catch let e as SystemError {
                throw RuntimeError(.spawnFailed, "cannot write \(file): \(e.text)")
            }
            return (target, file)
        }
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}
