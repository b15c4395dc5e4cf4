import Foundation
import Testing
@testable import RBuildRuntime
import RBuildSystem

struct UserSpecTests {
    @Test(arguments: [
        ("0", UserSpec(user: "0")), ("1000:1000", UserSpec(user: "1000", group: "1000")),
        ("app", UserSpec(user: "app")), ("app:staff", UserSpec(user: "app", group: "staff")),
        ("1000:staff", UserSpec(user: "1000", group: "staff")),
    ])
    func parses(_ text: String, _ expected: UserSpec) throws {
        #expect(try UserSpec.parse(text) == expected)
    }

    @Test(arguments: ["", ":", "::", "a:", ":b", "a b", "a:b:c", "x/y"])
    func rejects(_ text: String) {
        #expect(throws: RuntimeError.self) { try UserSpec.parse(text) }
    }
}

struct BindMountTests {
    @Test func parsesDockerSyntax() throws {
        #expect(try BindMount.parse("type=bind,source=/a,target=/b") == BindMount(source: "/a", target: "/b"))
        #expect(try BindMount.parse("src=/a,dst=/b,readonly") == BindMount(source: "/a", target: "/b", readOnly: true))
        #expect(try BindMount.parse("type=bind,source=/a,destination=/b,ro=true").readOnly)
        #expect(try !BindMount.parse("source=/a,target=/b,readonly=false").readOnly)
    }

    @Test(arguments: [
        ("type=tmpfs,target=/b", "type=tmpfs is not supported"),
        ("source=/a", "target= must be an absolute path"),
        ("source=/a,target=b", "target= must be an absolute path"),
        ("target=/b", "missing source="),
        ("source=/a,target=/b,bogus=1", "unknown field 'bogus=1'"),
        ("source=/a,target=/b,readonly=maybe", "readonly=maybe is not true or false"),
    ])
    func rejects(_ text: String, _ message: String) {
        do {
            _ = try BindMount.parse(text)
            Issue.record("accepted \(text)")
        } catch let e as RuntimeError {
            #expect(e.code == .badMount)
            #expect(e.message.contains(message), "\(e.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

struct UserDatabaseTests {
    let passwd = """
    root:x:0:0:root:/root:/bin/sh
    app:x:1000:1000:app:/home/app:/bin/sh
    broken line
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false
    """
    let group = """
    root:x:0:
    staff:x:50:app,other
    wheel:x:10:app
    app:x:1000:
    """

    @Test(arguments: [
        (UserSpec(user: "0"), ResolvedUser(uid: 0, gid: 0, groups: [], home: "/root")),
        (UserSpec(user: "app"), ResolvedUser(uid: 1000, gid: 1000, groups: [50, 10], home: "/home/app")),
        (UserSpec(user: "1000"), ResolvedUser(uid: 1000, gid: 1000, groups: [50, 10], home: "/home/app")),
        (UserSpec(user: "app", group: "staff"), ResolvedUser(uid: 1000, gid: 50, groups: [10], home: "/home/app")),
        (UserSpec(user: "1234"), ResolvedUser(uid: 1234, gid: 0, groups: [], home: "/")),
        (UserSpec(user: "1234", group: "4321"), ResolvedUser(uid: 1234, gid: 4321, groups: [], home: "/")),
        (UserSpec(user: "nobody"), ResolvedUser(uid: 65534, gid: 65534, groups: [], home: "/nonexistent")),
    ])
    func resolves(_ spec: UserSpec, _ expected: ResolvedUser) throws {
        #expect(try UserDatabase.resolve(spec, passwd: passwd, group: group) == expected)
    }

    @Test func unknownNamesAreErrors() {
        #expect(throws: RuntimeError.self) { try UserDatabase.resolve(UserSpec(user: "ghost"), passwd: passwd, group: group) }
        #expect(throws: RuntimeError.self) { try UserDatabase.resolve(UserSpec(user: "app", group: "nope"), passwd: passwd, group: group) }
    }

    /// The root's files are read as `readFileInRoot` reads them: missing ones are empty (numeric
    /// ids still work), a FIFO is refused at once, and the first layer that has a file wins.
    @Test func readsTheRootsFiles() throws {
        let dir = makeTemporaryDirectory(prefix: NSTemporaryDirectory() + "rbuild-users-")!
        defer { try? removeTree(atPath: dir) }
        for d in ["/empty", "/lower/etc", "/upper/etc"] {
            try FileManager.default.createDirectory(atPath: dir + d, withIntermediateDirectories: true)
        }
        #expect(try UserDatabase.resolve(UserSpec(user: "1234", group: "5"), rootfs: dir + "/empty")
                    == ResolvedUser(uid: 1234, gid: 5, groups: [], home: "/"))
        #expect(throws: RuntimeError.self) { try UserDatabase.resolve(UserSpec(user: "app"), rootfs: dir + "/empty") }
        try passwd.write(toFile: dir + "/lower/etc/passwd", atomically: false, encoding: .utf8)
        try group.write(toFile: dir + "/lower/etc/group", atomically: false, encoding: .utf8)
        let layers = [dir + "/upper", dir + "/lower"]
        #expect(try UserDatabase.resolve(UserSpec(user: "app"), roots: layers).groups == [50, 10])
        #expect(mkfifo(dir + "/upper/etc/group", 0o644) == 0)
        #expect(throws: ImageFileError(path: "/etc/group", problem: .fifo)) {
            try UserDatabase.resolve(UserSpec(user: "app"), roots: layers)
        }
        #expect(throws: RuntimeError.self) { try UserDatabase.resolve(UserSpec(user: "0"), rootfs: dir + "/none") }
    }
}

struct MountPlanTests {
    func plan(network: NetworkMode = .host, mounts: [BindMount] = [], ttyGroup: Bool = false) -> [MountStep] {
        var spec = SandboxSpec(rootfs: "/r", argv: ["true"])
        spec.network = network
        spec.mounts = mounts
        return MountPlan.build(spec: spec, etcFiles: [("/etc/hosts", "/tmp/x/hosts")], ttyGroupMapped: ttyGroup)
    }

    @Test func procComesFirstAndIsCreatedBeforePivot() throws {
        let first = try #require(plan().first)
        #expect(first.kind == .fsEarly)
        #expect(first.fstype == "proc")
        #expect(first.target == "/proc")
    }

    @Test func sysIsANewReadOnlySysfsOnlyWithItsOwnNetworkNamespace() throws {
        for mode in [NetworkMode.none, .isolated] {
            let own = try #require(plan(network: mode).first { $0.target == "/sys" })
            #expect(own.kind == .fsEarly && own.fstype == "sysfs" && own.options.contains(.readOnly), "\(mode)")
        }
        let host = try #require(plan(network: .host).first { $0.target == "/sys" })
        #expect(host.kind == .bindHost && host.options.isSuperset(of: [.readOnly, .recursive]))
    }

    @Test func devHasOnlyTheStandardDevices() {
        let binds = plan().filter { $0.kind == .bindHost && $0.target.hasPrefix("/dev/") }.map(\.target)
        #expect(binds == ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"])
    }

    @Test func devptsAsksForTheTtyGroupOnlyWhenItExists() throws {
        #expect(try #require(plan(ttyGroup: false).first { $0.fstype == "devpts" }).data?.contains("gid=5") == false)
        #expect(try #require(plan(ttyGroup: true).first { $0.fstype == "devpts" }).data?.contains("gid=5") == true)
    }

    @Test func masksAndReadOnlyPathsComeAfterUserMounts() throws {
        let steps = plan(mounts: [BindMount(source: "/tmp", target: "/proc/sys/x")])
        let user = try #require(steps.firstIndex { $0.source == "/tmp" })
        let firstMask = try #require(steps.firstIndex { $0.kind == .mask })
        let firstRO = try #require(steps.firstIndex { $0.kind == .readOnly })
        #expect(user < firstMask && firstMask < firstRO)
        #expect(Set(steps.filter { $0.kind == .mask }.map(\.target)).isSuperset(of: ["/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list", "/proc/sched_debug", "/proc/scsi"]))
        #expect(Set(steps.filter { $0.kind == .readOnly }.map(\.target)) == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"])
    }

    @Test func userMountsAreRecursiveAndHonourReadOnly() throws {
        let steps = plan(mounts: [BindMount(source: "/tmp", target: "/a", readOnly: true)])
        let m = try #require(steps.first { $0.target == "/a" })
        #expect(m.options.isSuperset(of: [.recursive, .readOnly, .targetIsDirectory]))
    }
}

struct ArchitectureTests {
    @Test(arguments: [
        ("linux/amd64", Architecture.x86_64), ("linux/arm64", .aarch64), ("linux/arm64/v8", .aarch64),
        ("arm64", .aarch64), ("linux/arm/v7", .arm), ("linux/arm/v6", .arm), ("linux/386", .i386),
        ("linux/riscv64", .riscv64), ("linux/ppc64le", .ppc64le), ("linux/s390x", .s390x),
    ])
    func parsesPlatforms(_ text: String, _ arch: Architecture) {
        #expect(Architecture(platform: text) == arch)
    }

    @Test(arguments: ["windows/amd64", "linux/mips", "", "linux/"])
    func rejectsUnknownPlatforms(_ text: String) {
        #expect(Architecture(platform: text) == nil)
    }

    @Test func nativeness() {
        #expect(Architecture.i386.isNative(on: .x86_64))
        #expect(!Architecture.aarch64.isNative(on: .x86_64))
        #expect(!Architecture.x86_64.isNative(on: .aarch64))
    }

    @Test func registrationLine() {
        let line = Architecture.aarch64.binfmtRegistration(interpreter: "/usr/bin/qemu-aarch64-static")
        #expect(line.hasPrefix(":rbuild-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00"))
        #expect(line.hasSuffix(":/usr/bin/qemu-aarch64-static:PF"))
        let (magic, mask) = Architecture.aarch64.elfMagic
        #expect(magic.count == 20 && mask.count == 20)
        #expect(magic[18] == 0xb7)
        #expect(Architecture.s390x.elfMagic.magic[19] == 0x16)
    }

    @Test func missingInterpreterIsNamed() throws {
        #expect(throws: RuntimeError.self) {
            _ = try Emulation.mode(for: .riscv64, host: .x86_64, kernel: KernelVersion(5, 15))
        }
        #expect(try Emulation.mode(for: .x86_64, host: .x86_64) == .native)
    }
}

struct ReadOnlyRootTests {
    @Test func resolvesInsideTheRootAndSplitsWhatIsMissing() throws {
        let root = makeTemporaryDirectory(prefix: NSTemporaryDirectory() + "rbuild-ro-")!
        defer { _ = try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        symlink("../run/systemd/resolv.conf", root + "/etc/resolv.conf")
        symlink("/etc", root + "/conf")
        symlink("/loop", root + "/loop")
        #expect(MountPlan.resolveInRoot(root, "/etc/hosts")! == (["etc"], ["hosts"]))
        #expect(MountPlan.resolveInRoot(root, "/etc/resolv.conf")! == ([], ["run", "systemd", "resolv.conf"]))
        #expect(MountPlan.resolveInRoot(root, "/conf/../../etc")! == (["etc"], []))
        #expect(MountPlan.resolveInRoot(root, "/srv/a/../b")! == ([], ["srv", "b"]))
        #expect(MountPlan.resolveInRoot(root, "/loop/x") == nil)
        // `..` before a name starting with a combining mark is still `..` (Character splits
        // took `../\u{301}x` for one name, looked up outside the root).
        symlink("../\u{301}x", root + "/mark")
        #expect(MountPlan.resolveInRoot(root, "/mark")! == ([], ["\u{301}x"]))
        #expect(MountPlan.resolveInRoot(root, "/../\u{301}x")! == ([], ["\u{301}x"]))
    }
}

/// `--ulimit NAME=SOFT[:HARD]`, as docker parses it.
struct UlimitTests {
    @Test(arguments: [("nofile=1024:2048", "nofile", UInt64(1024), UInt64(2048)), ("nproc=512", "nproc", 512, 512),
                      ("core=-1", "core", nil, nil), ("stack=8192:-1", "stack", 8192, nil)])
    func parses(_ text: String, _ name: String, _ soft: UInt64?, _ hard: UInt64?) throws {
        #expect(try Ulimit.parse(text) == Ulimit(name: name, soft: soft, hard: hard))
    }

    @Test(arguments: ["nofile", "bogus=1", "nofile=x", "nofile=2048:1024", "nofile=1:2:3", "nofile=-1:1024"])
    func refuses(_ text: String) {
        #expect(throws: RuntimeError.self) { try Ulimit.parse(text) }
    }

    @Test func aHardLimitAboveOursIsRefused() throws {
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(7), &rl)   // RLIMIT_NOFILE
        try Ulimit(name: "nofile", soft: 64, hard: UInt64(rl.rlim_max)).checkAllowed()
        if rl.rlim_max != rlim_t.max {
            #expect(throws: RuntimeError.self) { try Ulimit(name: "nofile", soft: 64, hard: UInt64(rl.rlim_max) + 1).checkAllowed() }
        }
    }
}
