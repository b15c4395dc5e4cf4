#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import CSeccomp
import Foundation
import RBuildSystem

/// A seccomp profile in moby's JSON format (what `docker run --security-opt seccomp=FILE` reads).
public struct SeccompProfile: Sendable, Decodable {
    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    public var archMap: [ArchMapEntry]?
    public var syscalls: [Rule]

    public struct ArchMapEntry: Sendable, Decodable {
        public var architecture: String
        public var subArchitectures: [String]?
    }

    public struct Rule: Sendable, Decodable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [Argument]?
        public var includes: Condition?
        public var excludes: Condition?
    }

    public struct Argument: Sendable, Decodable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64?
        public var op: String
    }

    public struct Condition: Sendable, Decodable {
        public var caps: [String]?
        public var arches: [String]?
        public var minKernel: String?
    }

    /// Parses a profile file.
    public static func load(path: String) throws -> SeccompProfile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RuntimeError(.seccomp, "cannot read seccomp profile \(path)")
        }
        return try decode(data, source: path)
    }

    /// The profile built into rbuild (profiles/default.json).
    public static func builtinDefault() throws -> SeccompProfile {
        try decode(Data(defaultSeccompProfileJSON.utf8), source: "the built-in default profile")
    }

    static func decode(_ data: Data, source: String) throws -> SeccompProfile {
        do {
            return try JSONDecoder().decode(SeccompProfile.self, from: data)
        } catch let DecodingError.keyNotFound(key, ctx) {
            let at = (ctx.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            throw RuntimeError(.seccomp, "seccomp profile \(source): missing key \(at)")
        } catch {
            throw RuntimeError(.seccomp, "seccomp profile \(source) is not valid moby JSON: \(error)")
        }
    }

    /// The calls that change a process's ids or a file's owner (with the 32-bit ABI's names).
    /// In single-id mode only id 0 exists in the sandbox, so the kernel refuses every change to
    /// another id with EINVAL: apt's drop to `_apt` (seteuid 42) and dpkg's chown to a package's
    /// owners fail. Like Apptainer's fakeroot fallback, `fakeIDChanges` makes them succeed
    /// without changing anything: files stay owned by 0:0, and the ids a process asked for are
    /// only what `FakeIDs` answers it.
    public static let idChangingSyscalls = idSetters + ownerChanges

    /// The calls that read or change another process's memory or descriptors: refused when RUN
    /// steps share a pid namespace with processes of their uid outside the sandbox.
    public static let crossProcessSyscalls: Set<String> = [
        "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
    ]
    static let idSetters = [
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
        "setuid32", "setgid32", "setreuid32", "setregid32", "setresuid32", "setresgid32",
        "setfsuid32", "setfsgid32", "setgroups32",
    ]
    static let ownerChanges = ["chown", "fchown", "lchown", "fchownat", "chown32", "fchown32", "lchown32"]
    /// What a process reads back after changing ids. apt checks that its drop took
    /// (getgid() == _apt's group), so with a listener (`SeccompProgram.notifies`) the setters and
    /// these are answered by `FakeIDs` from ids it keeps per process, as fakeroot does.
    static let idGetters = [
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "getuid32", "geteuid32", "getgid32", "getegid32", "getresuid32", "getresgid32", "getgroups32",
    ]

    /// Whether this kernel and libseccomp support SCMP_ACT_NOTIFY (Linux 5.0, API level 5).
    static var canNotify: Bool { seccomp_api_get() >= 5 }

    /// Compiles the profile to a BPF program for `capabilities` on `architecture` (its compat
    /// ABIs from archMap included), applying includes/excludes as moby does. With
    /// `fakeIDChanges` (single-id mode), whatever the profile says about them, the owner changes
    /// return 0 and the id setters and getters notify a listener (`SeccompProgram.notifies`),
    /// or, where the kernel cannot, the setters return 0.
    public func compile(capabilities: CapabilitySet, kernel: KernelVersion? = nil,
                        architecture: Architecture = .host, fakeIDChanges: Bool = false,
                        denying denied: Set<String> = []) throws -> SeccompProgram {
        let native = architecture.seccompArch
        guard let ctx = seccomp_init(try SeccompProfile.action(defaultAction, errno: defaultErrnoRet, rule: "defaultAction")) else {
            throw RuntimeError(.seccomp, "libseccomp could not create a filter")
        }
        defer { seccomp_release(ctx) }
        // The child sets no_new_privs itself, right before loading the filter.
        seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)
        // A syscall from an ABI the filter does not cover fails with ENOSYS rather than killing
        // the step (runc's choice; the default ABIs of the architecture are all covered).
        seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, rb_scmp_act_errno(UInt16(ENOSYS)))

        let nativeToken = try SeccompProfile.archToken(native)
        if nativeToken != seccomp_arch_native() {
            seccomp_arch_remove(ctx, seccomp_arch_native())
            try check(seccomp_arch_add(ctx, nativeToken), "adding architecture \(native)")
        }
        for entry in archMap ?? [] where entry.architecture == native {
            for sub in entry.subArchitectures ?? [] {
                let rc = seccomp_arch_add(ctx, try SeccompProfile.archToken(sub))
                if rc != 0 && rc != -EEXIST { try check(rc, "adding architecture \(sub)") }
            }
        }

        let defaultAct = try SeccompProfile.action(defaultAction, errno: defaultErrnoRet, rule: "defaultAction")
        let goArch = architecture.goArch
        // libseccomp refuses a second rule with another action for the same syscall (EEXIST), so
        // the profile's rules for the faked calls are left out rather than overridden.
        let notifies = fakeIDChanges && SeccompProfile.canNotify
        var fakeActions: [String: UInt32] = [:]
        if fakeIDChanges {
            for name in SeccompProfile.ownerChanges { fakeActions[name] = rb_scmp_act_errno(0) }
            for name in SeccompProfile.idSetters { fakeActions[name] = notifies ? SCMP_ACT_NOTIFY : rb_scmp_act_errno(0) }
            if notifies { for name in SeccompProfile.idGetters { fakeActions[name] = SCMP_ACT_NOTIFY } }
        }
        let faked = Set(fakeActions.keys)
        for (name, act) in fakeActions.sorted(by: { $0.key < $1.key }) {
            let nr = seccomp_syscall_resolve_name(name)
            if nr == __NR_SCMP_ERROR { continue }
            try check(seccomp_rule_add_array(ctx, act, nr, 0, nil), "adding the fake-id rule for \(name)")
        }
        for (i, rule) in syscalls.enumerated() {
            guard applies(rule, capabilities: capabilities, goArch: goArch, kernel: kernel) else { continue }
            let act = try SeccompProfile.action(rule.action, errno: rule.errnoRet ?? defaultErrnoRet, rule: "syscalls[\(i)]")
            if act == defaultAct { continue }
            let conditions = try (rule.args ?? []).map { arg -> scmp_arg_cmp in
                scmp_arg_cmp(arg: arg.index, op: try SeccompProfile.compare(arg.op, rule: "syscalls[\(i)]"),
                             datum_a: arg.value, datum_b: arg.valueTwo ?? 0)
            }
            // Conditions on the same argument cannot be ANDed by libseccomp: moby adds one rule each.
            let sameIndexTwice = Set(conditions.map(\.arg)).count != conditions.count
            let groups: [[scmp_arg_cmp]] = sameIndexTwice ? conditions.map { [$0] } : [conditions]
            for name in rule.names where !faked.contains(name) && !denied.contains(name) {
                let nr = seccomp_syscall_resolve_name(name)
                if nr == __NR_SCMP_ERROR { continue }   // unknown to this libseccomp: skipped, as Docker does
                for group in groups {
                    let rc = group.withUnsafeBufferPointer {
                        seccomp_rule_add_array(ctx, act, nr, UInt32($0.count), $0.baseAddress)
                    }
                    try check(rc, "adding rule for \(name) (syscalls[\(i)])")
                }
            }
        }
        return SeccompProgram(bytes: try export(ctx), notifies: notifies)
    }

    func applies(_ rule: Rule, capabilities: CapabilitySet, goArch: String, kernel: KernelVersion?) -> Bool {
        if let inc = rule.includes {
            if let caps = inc.caps, !caps.allSatisfy({ capabilities.contains($0) }) { return false }
            if let arches = inc.arches, !arches.contains(goArch) { return false }
            if let min = inc.minKernel, let want = KernelVersion(release: min),
               let have = kernel ?? Optional(KernelVersion.current), have < want { return false }
        }
        if let exc = rule.excludes {
            if let caps = exc.caps, caps.contains(where: { capabilities.contains($0) }) { return false }
            if let arches = exc.arches, arches.contains(goArch) { return false }
            if let min = exc.minKernel, let want = KernelVersion(release: min),
               let have = kernel ?? Optional(KernelVersion.current), !(have < want) { return false }
        }
        return true
    }

    static func action(_ name: String, errno: UInt32?, rule: String) throws -> UInt32 {
        switch name {
        case "SCMP_ACT_ALLOW": return SCMP_ACT_ALLOW
        case "SCMP_ACT_ERRNO": return rb_scmp_act_errno(UInt16(truncatingIfNeeded: errno ?? UInt32(EPERM)))
        case "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD": return SCMP_ACT_KILL_THREAD
        case "SCMP_ACT_KILL_PROCESS": return SCMP_ACT_KILL_PROCESS
        case "SCMP_ACT_TRAP": return SCMP_ACT_TRAP
        case "SCMP_ACT_TRACE": return rb_scmp_act_trace(UInt16(truncatingIfNeeded: errno ?? UInt32(EPERM)))
        case "SCMP_ACT_LOG": return SCMP_ACT_LOG
        default:
            throw RuntimeError(.seccomp, "seccomp profile: unknown action \(name) in \(rule) (expected SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL…)")
        }
    }

    static func compare(_ op: String, rule: String) throws -> scmp_compare {
        switch op {
        case "SCMP_CMP_NE": return SCMP_CMP_NE
        case "SCMP_CMP_LT": return SCMP_CMP_LT
        case "SCMP_CMP_LE": return SCMP_CMP_LE
        case "SCMP_CMP_EQ": return SCMP_CMP_EQ
        case "SCMP_CMP_GE": return SCMP_CMP_GE
        case "SCMP_CMP_GT": return SCMP_CMP_GT
        case "SCMP_CMP_MASKED_EQ": return SCMP_CMP_MASKED_EQ
        default:
            throw RuntimeError(.seccomp, "seccomp profile: unknown operator \(op) in \(rule)")
        }
    }

    /// `SCMP_ARCH_X86_64` → libseccomp's token for it.
    static func archToken(_ name: String) throws -> UInt32 {
        let short = name.hasPrefix("SCMP_ARCH_") ? String(name.dropFirst(10)).lowercased() : name.lowercased()
        let token = seccomp_arch_resolve_name(short)
        guard token != 0 else {
            throw RuntimeError(.seccomp, "seccomp profile: architecture \(name) is unknown to libseccomp")
        }
        return token
    }

    private func check(_ rc: Int32, _ what: String) throws {
        if rc != 0 {
            throw RuntimeError(.seccomp, "seccomp: \(what) failed: \(errnoText(-rc))")
        }
    }

    /// libseccomp 2.5 can only export to a file descriptor: use a memfd and read it back.
    private func export(_ ctx: scmp_filter_ctx) throws -> [UInt8] {
        let fd = rb_memfd("rbuild-seccomp")
        guard fd >= 0 else { throw RuntimeError(.seccomp, "memfd_create: \(errnoText(-fd))") }
        defer { close(fd) }
        try check(seccomp_export_bpf(ctx, fd), "exporting the filter")
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0 else { throw RuntimeError(.seccomp, "seccomp: the exported filter is empty") }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == size else { throw RuntimeError(.seccomp, "seccomp: reading the exported filter failed") }
        return bytes
    }
}

/// A compiled filter: `struct sock_filter` instructions, as prctl(PR_SET_SECCOMP) wants them.
public struct SeccompProgram: Sendable {
    public let bytes: [UInt8]
    /// Some rules are SCMP_ACT_NOTIFY: the filter must be loaded with a listener that someone
    /// answers (`FakeIDs`), or those calls block.
    public var notifies = false
    public var instructionCount: Int { bytes.count / 8 }
}

extension Architecture {
    /// libseccomp's name of the native ABI.
    var seccompArch: String {
        switch self {
        case .x86_64: return "SCMP_ARCH_X86_64"
        case .i386: return "SCMP_ARCH_X86"
        case .aarch64: return "SCMP_ARCH_AARCH64"
        case .arm: return "SCMP_ARCH_ARM"
        case .riscv64: return "SCMP_ARCH_RISCV64"
        case .ppc64le: return "SCMP_ARCH_PPC64LE"
        case .s390x: return "SCMP_ARCH_S390X"
        }
    }

    /// Go's GOARCH, which moby profiles use in includes/excludes.
    var goArch: String {
        switch self {
        case .x86_64: return "amd64"
        case .i386: return "386"
        case .aarch64: return "arm64"
        case .arm: return "arm"
        case .riscv64: return "riscv64"
        case .ppc64le: return "ppc64le"
        case .s390x: return "s390x"
        }
    }
}

/// Compiles the filter a sandbox loads: `profile`, or the built-in default, for the host.
///
/// Compiling takes libseccomp a few milliseconds, more than the rest of a sandbox's start-up,
/// so the built-in profile's program is kept in memory and in `$XDG_CACHE_HOME/rbuild/seccomp/`
/// under a key of everything that shapes it (profile text, capabilities, architecture, kernel,
/// libseccomp version). A cached file that is not a whole number of instructions is ignored.
///
/// `crossProcess` false (the reduced isolations, where RUN steps share a pid namespace and a uid
/// with processes outside them) leaves out the rules that allow reaching into another process:
/// `SeccompProfile.crossProcessSyscalls` then fail with the profile's default action.
public func seccompProgramForSandbox(profile: SeccompProfile?, capabilities: CapabilitySet,
                                     fakeIDChanges: Bool = false, crossProcess: Bool = true) throws -> SeccompProgram {
    let denied = crossProcess ? [] : SeccompProfile.crossProcessSyscalls
    guard profile == nil else {
        return try profile!.compile(capabilities: capabilities, fakeIDChanges: fakeIDChanges, denying: denied)
    }
    let v = seccomp_version()!.pointee
    let key = fnv1a64("\(defaultSeccompProfileJSON)|\(capabilities.mask)|\(Architecture.host.rawValue)|\(KernelVersion.current)|\(v.major).\(v.minor).\(v.micro)|fake-ids=\(fakeIDChanges && SeccompProfile.canNotify ? "notify" : String(fakeIDChanges))" + (crossProcess ? "" : "|no-cross-process"))
    if let cached = defaultProgramCache.value, cached.key == key { return cached.program }
    let file = seccompCacheDirectory().map { "\($0)/\(String(key, radix: 16)).bpf" }
    if let file, let bytes = FileManager.default.contents(atPath: file), !bytes.isEmpty, bytes.count % 8 == 0 {
        let program = SeccompProgram(bytes: [UInt8](bytes), notifies: fakeIDChanges && SeccompProfile.canNotify)
        defaultProgramCache.value = (key, program)
        return program
    }
    let program = try SeccompProfile.builtinDefault().compile(capabilities: capabilities, fakeIDChanges: fakeIDChanges, denying: denied)
    defaultProgramCache.value = (key, program)
    if let file {
        // Best effort: temp file + rename, so a reader never sees half a program.
        let tmp = file + ".\(getpid()).tmp"
        unlink(tmp)
        if (try? writeNewFile(tmp, program.bytes, mode: 0o600)) != nil, rename(tmp, file) != 0 {
            unlink(tmp)
        }
    }
    return program
}

func seccompCacheDirectory() -> String? {
    let env = ProcessInfo.processInfo.environment
    // Without HOME (cron, `env -i`), the home directory from the user database (homeDirectory):
    // compiling anew in every process costs 25 ms of libseccomp per sandbox start.
    let base = env["XDG_CACHE_HOME"] ?? homeDirectory() + "/.cache"
    guard base.hasPrefix("/") else { return nil }
    let dir = base + "/rbuild/seccomp"
    if !isDirectory(dir) {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
    }
    return isDirectory(dir) && access(dir, W_OK) == 0 ? dir : nil
}

/// FNV-1a, 64 bits: a cache key, not a digest.
func fnv1a64(_ s: String) -> UInt64 {
    var h: UInt64 = 0xcbf29ce484222325
    for b in s.utf8 {
        h ^= UInt64(b)
        h = h &* 0x100000001b3
    }
    return h
}

private final class ProgramCache: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (key: UInt64, program: SeccompProgram)?
    var value: (key: UInt64, program: SeccompProgram)? {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}

private let defaultProgramCache = ProgramCache()
