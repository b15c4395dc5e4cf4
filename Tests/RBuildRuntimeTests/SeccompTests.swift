import Foundation
import Testing
@testable import RBuildRuntime
import RBuildSystem
import CRBuildChild
import CSeccomp
#if canImport(Glibc)
import Glibc
#endif

struct CapabilityTests {
    @Test func dockerDefaultIsTheWellKnownMask() {
        #expect(CapabilitySet.dockerDefault.mask == 0xa80425fb)
        #expect(CapabilitySet.dockerDefault.names.count == 14)
        #expect(CapabilitySet.dockerDefault.contains("CAP_NET_BIND_SERVICE"))
        #expect(!CapabilitySet.dockerDefault.contains("CAP_SYS_ADMIN"))
    }

    @Test(arguments: [("CAP_CHOWN", 0), ("chown", 0), ("Cap_Sys_Admin", 21), ("net_raw", 13), ("CAP_BPF", 39)])
    func parsesNames(_ name: String, _ bit: Int) throws {
        #expect(try CapabilitySet(names: [name]).mask == 1 << UInt64(bit))
    }

    @Test func namesRoundTrip() throws {
        let set = try CapabilitySet(names: CapabilitySet.dockerDefault.names)
        #expect(set == .dockerDefault)
        #expect(CapabilitySet.dockerDefault.names.first == "CAP_CHOWN")
    }

    @Test func unknownNamesAreErrors() {
        #expect(throws: RuntimeError.self) { try CapabilitySet(names: ["CAP_MAKE_COFFEE"]) }
    }

    @Test func allCoversTheKernelsCapabilities() {
        #expect(CapabilitySet.lastCap >= 40)
        #expect(CapabilitySet.all.mask.nonzeroBitCount == CapabilitySet.lastCap + 1)
    }
}

struct SeccompTests {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    @Test func builtinProfileIsProfilesDefaultJSON() throws {
        let file = try String(contentsOfFile: SeccompTests.root + "/profiles/default.json", encoding: .utf8)
        #expect(file == defaultSeccompProfileJSON, "run scripts/gen-seccomp-profile")
    }

    @Test func builtinProfileParses() throws {
        let p = try SeccompProfile.builtinDefault()
        #expect(p.defaultAction == "SCMP_ACT_ERRNO")
        #expect(p.defaultErrnoRet == 1)
        let allowed = Set(p.syscalls[0].names)
        for name in ["read", "write", "execve", "wait4", "pipe2", "openat", "clock_gettime"] {
            #expect(allowed.contains(name), "\(name)")
        }
        for name in ["unshare", "setns", "mount", "umount2", "pivot_root", "keyctl", "add_key", "request_key",
                     "bpf", "perf_event_open", "kexec_load", "reboot", "swapon", "init_module", "open_by_handle_at", "clone",
                     "clone3", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "socket", "ioctl"] {
            #expect(!allowed.contains(name), "\(name) must not be unconditionally allowed")
        }
    }

    @Test func compilesForTheHostAndCrossCompilesForAarch64() throws {
        let p = try SeccompProfile.builtinDefault()
        let start = Date()
        let host = try p.compile(capabilities: .dockerDefault, architecture: .x86_64)
        let ms = Date().timeIntervalSince(start) * 1000
        let arm = try p.compile(capabilities: .dockerDefault, architecture: .aarch64)
        #expect(host.bytes.count % 8 == 0)
        // x86_64 + i386 + x32 in one program: several hundred instructions.
        #expect(host.instructionCount > 300, "\(host.instructionCount)")
        #expect(arm.instructionCount > 100, "\(arm.instructionCount)")
        // The kernel refuses a program longer than BPF_MAXINSNS.
        #expect(host.instructionCount < 4096, "\(host.instructionCount)")
        #expect(arm.instructionCount < 4096, "\(arm.instructionCount)")
        #expect(host.bytes != arm.bytes)
        // A guard against something pathological, not a benchmark: the unit tests run in
        // parallel, from a debug build (scripts/bench/spawn measures start-up).
        #expect(ms < 2000, "compiling took \(ms) ms")
    }

    @Test func capabilitiesUnlockTheirSyscalls() throws {
        let p = try SeccompProfile.builtinDefault()
        let plain = try p.compile(capabilities: .dockerDefault, architecture: .x86_64)
        let admin = try p.compile(capabilities: CapabilitySet(mask: CapabilitySet.dockerDefault.mask | (1 << 21)), architecture: .x86_64)
        #expect(plain.bytes != admin.bytes)
    }

    func rule(_ json: String) throws -> SeccompProfile.Rule {
        try JSONDecoder().decode(SeccompProfile.Rule.self, from: Data(json.utf8))
    }

    @Test func includesAndExcludes() throws {
        let p = try SeccompProfile.builtinDefault()
        let caps = CapabilitySet.dockerDefault
        let k = KernelVersion(6, 1)
        #expect(p.applies(try rule(#"{"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}"#), capabilities: caps, goArch: "amd64", kernel: k) == false)
        #expect(p.applies(try rule(#"{"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_KILL"]}}"#), capabilities: caps, goArch: "amd64", kernel: k))
        #expect(p.applies(try rule(#"{"names":["x"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_KILL"]}}"#), capabilities: caps, goArch: "amd64", kernel: k) == false)
        #expect(p.applies(try rule(#"{"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["arm64"]}}"#), capabilities: caps, goArch: "amd64", kernel: k) == false)
        #expect(p.applies(try rule(#"{"names":["x"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["s390x"]}}"#), capabilities: caps, goArch: "amd64", kernel: k))
        #expect(p.applies(try rule(#"{"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"6.2"}}"#), capabilities: caps, goArch: "amd64", kernel: k) == false)
        #expect(p.applies(try rule(#"{"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}}"#), capabilities: caps, goArch: "amd64", kernel: k))
    }

    @Test(arguments: [
        (#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_MAYBE"}]}"#, "unknown action SCMP_ACT_MAYBE in syscalls[0]"),
        (#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_ABOUT"}]}]}"#, "unknown operator SCMP_CMP_ABOUT in syscalls[0]"),
        (#"{"defaultAction":"SCMP_ACT_NOPE","syscalls":[]}"#, "unknown action SCMP_ACT_NOPE in defaultAction"),
    ])
    func badProfilesAreNamed(_ json: String, _ message: String) throws {
        let p = try SeccompProfile.decode(Data(json.utf8), source: "test.json")
        do {
            _ = try p.compile(capabilities: .dockerDefault)
            Issue.record("compiled")
        } catch let e as RuntimeError {
            #expect(e.message.contains(message), "\(e.message)")
        }
    }

    @Test func malformedJSONIsNamed() {
        #expect {
            _ = try SeccompProfile.decode(Data(#"{"defaultAction":"SCMP_ACT_ERRNO"}"#.utf8), source: "p.json")
        } throws: { error in
            (error as? RuntimeError)?.message == "seccomp profile p.json: missing key syscalls"
        }
    }

    @Test func unknownSyscallNamesAreSkipped() throws {
        let json = #"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","no_such_call_42"],"action":"SCMP_ACT_ALLOW"}]}"#
        let p = try SeccompProfile.decode(Data(json.utf8), source: "t")
        #expect(try p.compile(capabilities: .dockerDefault).instructionCount > 0)
    }
}

/// What the built-in profile answers, call by call, evaluated on the compiled program.
struct DefaultProfileRuleTests {
    static let x86 = Result { try SeccompProfile.builtinDefault().compile(capabilities: .dockerDefault, architecture: .x86_64) }
    static let arm = Result { try SeccompProfile.builtinDefault().compile(capabilities: .dockerDefault, architecture: .aarch64) }
    static let TIOCSTI: UInt64 = 0x5412, TIOCLINUX: UInt64 = 0x541C, TIOCGWINSZ: UInt64 = 0x5413, TCGETS: UInt64 = 0x5401
    static let EPERM = SeccompVerdict.errno(1), ENOSYS = SeccompVerdict.errno(38)
    static let CLONE_NEWUSER: UInt64 = 0x1000_0000, SIGCHLD: UInt64 = 17

    @Test("refused, as by Docker's profile, on every ABI of the host", arguments: [
        // moby dropped io_uring in Docker 25.
        "io_uring_setup", "io_uring_enter", "io_uring_register",
        "keyctl", "add_key", "request_key", "userfaultfd", "bpf", "perf_event_open",
        "unshare", "setns", "mount", "umount2", "pivot_root", "kexec_load", "init_module", "open_by_handle_at",
    ])
    func refused(_ name: String) throws {
        for arch in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
            #expect(try Self.x86.get().verdict(arch, name) == Self.EPERM, "\(arch) \(name)")
        }
        for arch in ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"] {
            #expect(try Self.arm.get().verdict(arch, name) == Self.EPERM, "\(arch) \(name)")
        }
    }

    @Test("clone3 is ENOSYS so that glibc falls back to clone, whose flags the filter sees")
    func clone3() throws {
        for arch in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
            #expect(try Self.x86.get().verdict(arch, "clone3") == Self.ENOSYS, "\(arch)")
        }
        for arch in ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"] {
            #expect(try Self.arm.get().verdict(arch, "clone3") == Self.ENOSYS, "\(arch)")
        }
        let p = try Self.x86.get()
        #expect(try p.verdict("SCMP_ARCH_X86_64", "clone", [Self.SIGCHLD]) == .allow)
        #expect(try p.verdict("SCMP_ARCH_X86_64", "clone", [Self.CLONE_NEWUSER | Self.SIGCHLD]) == Self.EPERM)
        #expect(try p.verdict("SCMP_ARCH_X86", "clone", [Self.CLONE_NEWUSER | Self.SIGCHLD]) == Self.EPERM)
    }

    @Test("with CAP_SYS_ADMIN clone3 is allowed, io_uring still not")
    func sysAdmin() throws {
        let admin = CapabilitySet(mask: CapabilitySet.dockerDefault.mask | (1 << 21))
        let p = try SeccompProfile.builtinDefault().compile(capabilities: admin, architecture: .x86_64)
        #expect(try p.verdict("SCMP_ARCH_X86_64", "clone3") == .allow)
        #expect(try p.verdict("SCMP_ARCH_X86_64", "io_uring_setup") == Self.EPERM)
    }

    @Test("socket: every family but AF_ALG (38) and AF_VSOCK (40)")
    func socketFamilies() throws {
        let p = try Self.x86.get()
        for family: UInt64 in [1, 2, 10, 16, 17, 37, 39, 41, 45] {
            #expect(try p.verdict("SCMP_ARCH_X86_64", "socket", [family, 1, 0]) == .allow, "\(family)")
        }
        for family: UInt64 in [38, 40] {
            #expect(try p.verdict("SCMP_ARCH_X86_64", "socket", [family, 5, 0]) == Self.EPERM, "\(family)")
            // i386's direct socket(2), 359 (libseccomp names only socketcall's form of it).
            let i386 = try p.run(arch: try SeccompProfile.archToken("SCMP_ARCH_X86"), nr: 359, args: [family, 5, 0])
            #expect(SeccompVerdict(i386) == Self.EPERM, "\(family)")
        }
    }

    @Test("ioctl: TIOCSTI and TIOCLINUX are EPERM whatever the upper 32 bits; other requests pass")
    func terminalIoctls() throws {
        let p = try Self.x86.get()
        for arch in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
            for request in [Self.TIOCSTI, Self.TIOCLINUX] {
                #expect(try p.verdict(arch, "ioctl", [0, request, 0]) == Self.EPERM, "\(arch) \(request)")
            }
            for request in [Self.TCGETS, Self.TIOCGWINSZ, 0x541B /* FIONREAD */, 0x8004_5430 /* TIOCGPTN */] {
                #expect(try p.verdict(arch, "ioctl", [0, request, 0]) == .allow, "\(arch) \(request)")
            }
        }
        // The kernel takes the request as an unsigned int: a high bit must not slip past (CVE-2019-10063).
        for high: UInt64 in [1 << 32, 1 << 63, 0xFFFF_FFFF_0000_0000] {
            #expect(try p.verdict("SCMP_ARCH_X86_64", "ioctl", [0, high | Self.TIOCSTI, 0]) == Self.EPERM)
            #expect(try p.verdict("SCMP_ARCH_X86_64", "ioctl", [0, high | Self.TIOCLINUX, 0]) == Self.EPERM)
            #expect(try p.verdict("SCMP_ARCH_X86_64", "ioctl", [0, high | Self.TCGETS, 0]) == .allow)
        }
        let a = try Self.arm.get()
        for arch in ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"] {
            #expect(try a.verdict(arch, "ioctl", [0, Self.TIOCSTI, 0]) == Self.EPERM, "\(arch)")
            #expect(try a.verdict(arch, "ioctl", [0, Self.TIOCLINUX, 0]) == Self.EPERM, "\(arch)")
            #expect(try a.verdict(arch, "ioctl", [0, Self.TCGETS, 0]) == .allow, "\(arch)")
        }
    }

    @Test("ioctl: exactly the two requests are refused (every value near them, and a sample of the rest)")
    func ioctlSweep() throws {
        let p = try Self.x86.get()
        var requests = Set<UInt64>((0x5400..<0x5500).map { UInt64($0) })
        for base in [Self.TIOCSTI, Self.TIOCLINUX] {
            for bit in 0..<64 { requests.insert(base ^ (1 << UInt64(bit))) }
        }
        // Spread over all 32 bits (Fibonacci hashing), the same values every run.
        for i in UInt32(1)...500 { requests.insert(UInt64(i &* 0x9E37_79B9)) }
        for request in requests.sorted() {
            let refused = [Self.TIOCSTI, Self.TIOCLINUX].contains(request & 0xFFFF_FFFF)
            #expect(try p.verdict("SCMP_ARCH_X86_64", "ioctl", [0, request, 0]) == (refused ? Self.EPERM : .allow),
                    "0x\(String(request, radix: 16))")
        }
    }

    @Test("what ordinary programs need is allowed on every ABI", arguments: [
        "read", "write", "openat", "execve", "wait4", "getpid", "futex", "mmap", "rt_sigaction",
    ])
    func allowed(_ name: String) throws {
        for arch in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
            #expect(try Self.x86.get().verdict(arch, name) == .allow, "\(arch) \(name)")
        }
    }

    @Test("a call from an ABI the filter does not cover is ENOSYS")
    func foreignABI() throws {
        let p = try Self.x86.get()
        #expect(SeccompVerdict(try p.run(arch: try SeccompProfile.archToken("SCMP_ARCH_AARCH64"), nr: 63, args: [])) == Self.ENOSYS)
    }
}

struct FakeIDChangeTests {
    // The profile allows every id-changing call; the no-op rule must replace those rules, since
    // libseccomp refuses a second action for one syscall.
    @Test(arguments: [Architecture.x86_64, .aarch64])
    func replacesTheProfilesAllowRules(_ arch: Architecture) throws {
        let p = try SeccompProfile.builtinDefault()
        let real = try p.compile(capabilities: .dockerDefault, architecture: arch)
        let faked = try p.compile(capabilities: .dockerDefault, architecture: arch, fakeIDChanges: true)
        #expect(faked.bytes != real.bytes)
        #expect(faked.instructionCount > 100)
    }

    @Test func conditionalRulesForFakedCallsAreLeftOut() throws {
        let json = #"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","setresuid"],"action":"SCMP_ACT_ALLOW"},{"names":["chown"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#
        let p = try SeccompProfile.decode(Data(json.utf8), source: "t")
        #expect(try p.compile(capabilities: .dockerDefault, fakeIDChanges: true).instructionCount > 0)
    }
}

struct FakeIDsTests {
    /// A notification from this test process for `name` on the host ABI.
    func notif(_ name: String, _ args: [UInt64] = []) -> rb_notif {
        var n = rb_notif()
        n.pid = UInt32(getpid())
        n.arch = seccomp_arch_native()
        n.nr = seccomp_syscall_resolve_name(name)
        withUnsafeMutableBytes(of: &n.args) { raw in
            for (i, a) in args.enumerated() { raw.storeBytes(of: a, toByteOffset: i * 8, as: UInt64.self) }
        }
        return n
    }

    @Test func answersGettersFromTheIdsSet() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        close(pair[1])   // no child: the serving thread ends at once
        let fake = FakeIDs(socket: pair[0])
        defer { fake.stop() }
        let minus1 = UInt64(UInt32.max)
        #expect(fake.answer(notif("getuid")) == (0, 0))
        #expect(fake.answer(notif("setresuid", [42, 42, 42])) == (0, 0))
        var groups: [UInt32] = [65534]
        #expect(groups.withUnsafeBufferPointer { fake.answer(notif("setgroups", [1, UInt64(UInt(bitPattern: $0.baseAddress))])) } == (0, 0))
        #expect(fake.answer(notif("setresgid", [65534, 65534, minus1])) == (0, 0))
        #expect(fake.answer(notif("geteuid")) == (42, 0))
        #expect(fake.answer(notif("getgid")) == (65534, 0))
        #expect(fake.answer(notif("getgroups", [0, 0])) == (1, 0))
        groups = [0, 0]
        #expect(groups.withUnsafeMutableBufferPointer { fake.answer(notif("getgroups", [2, UInt64(UInt(bitPattern: $0.baseAddress))])) } == (1, 0))
        #expect(groups[0] == 65534)
        var three: [UInt32] = [9, 9, 9]
        let rc = three.withUnsafeMutableBufferPointer { p in
            fake.answer(notif("getresgid", (0..<3).map { UInt64(UInt(bitPattern: p.baseAddress! + $0)) }))
        }
        #expect(rc == (0, 0))
        #expect(three == [65534, 65534, 0])
        // apt's check after the drop, then its way back (seteuid 0 keeps the saved id).
        #expect(fake.answer(notif("setreuid", [minus1, 0])) == (0, 0))
        #expect(fake.answer(notif("getuid")) == (42, 0))
        #expect(fake.answer(notif("geteuid")) == (0, 0))
        #expect(fake.answer(notif("setfsuid", [minus1])) == (0, 0))
    }
}
