import Foundation
import Testing
@testable import RBuildRuntime
import RBuildSystem
#if canImport(Glibc)
import Glibc
#endif

struct IsolationTests {
    @Test func parsesTheFlag() throws {
        #expect(try Isolation.parse("auto") == nil)
        #expect(try Isolation.parse("sandbox") == .sandbox)
        #expect(try Isolation.parse("no-pid-sandbox") == .noPidSandbox)
        #expect(try Isolation.parse("chroot") == .chroot)
        #expect(throws: RuntimeError.self) { try Isolation.parse("rootless") }
    }

    /// Without a pid namespace the container's /proc (and /sys) are bound read-only, masks
    /// included, instead of mounting instances the kernel refuses.
    @Test func noPidSandboxBindsTheOuterProc() {
        var spec = SandboxSpec(rootfs: "/tmp/x", argv: ["true"])
        spec.network = .none
        let own = MountPlan.build(spec: spec, etcFiles: [], ttyGroupMapped: false)
        let bound = MountPlan.build(spec: spec, etcFiles: [], ttyGroupMapped: false, ownProc: false)
        #expect(own.contains { $0.kind == .fsEarly && $0.fstype == "proc" })
        #expect(own.contains { $0.kind == .fsEarly && $0.fstype == "sysfs" })
        let proc = bound.first { $0.target == "/proc" }
        #expect(proc?.kind == .bindHost && proc?.source == "/proc" && proc!.options.contains(.readOnly) && proc!.options.contains(.recursive))
        #expect(bound.first { $0.target == "/sys" }?.kind == .bindHost)
        #expect(!bound.contains { $0.kind == .fsEarly })
    }

    /// The reduced isolations refuse the calls that reach into another process.
    @Test func crossProcessCallsAreRefusedWhenAsked() throws {
        let shared = try SeccompProfile.builtinDefault().compile(capabilities: .dockerDefault, architecture: .x86_64)
        let confined = try SeccompProfile.builtinDefault().compile(capabilities: .dockerDefault, architecture: .x86_64,
                                                                 denying: SeccompProfile.crossProcessSyscalls)
        for name in ["ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp"] {
            #expect(try confined.verdict("x86_64", name) == SeccompVerdict.errno(1), "\(name)")
        }
        #expect(try shared.verdict("x86_64", "ptrace") == SeccompVerdict.allow)
        #expect(try confined.verdict("x86_64", "read") == SeccompVerdict.allow)
    }

    /// What the chroot isolation puts in a root is taken back, with the image's entries and the
    /// directories' times; a symlinked /etc pointing out of the root is resolved inside it.
    @Test(.enabled(if: getuid() == 0, "mknod needs root (CI runs unit tests as root)"))
    func chrootRootIsRestored() throws {
        let dir = NSTemporaryDirectory() + "rbuild-chroot-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let root = dir + "/root", outside = dir + "/outside"
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: outside, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: dir) }
        try "image hosts\n".write(toFile: root + "/etc/hosts", atomically: false, encoding: .utf8)
        var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, root + "/etc", &times, 0)
        let chroot = try ChrootRoot(rootfs: root)
        try chroot.place(etcFiles: [("hosts", Array("ours\n".utf8)), ("resolv.conf", Array("nameserver 1\n".utf8))])
        #expect(try String(contentsOfFile: root + "/etc/hosts", encoding: .utf8) == "ours\n")
        var st = stat()
        #expect(lstat(root + "/dev/null", &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR && st.st_rdev == ChrootRoot.deviceNumber(1, 3))
        #expect(lstat(root + "/dev/shm", &st) == 0 && st.st_mode & 0o7777 == 0o1777)
        try "left by the step\n".write(toFile: root + "/dev/shm/x", atomically: false, encoding: .utf8)
        try chroot.restore()
        #expect(try String(contentsOfFile: root + "/etc/hosts", encoding: .utf8) == "image hosts\n")
        #expect(!fm.fileExists(atPath: root + "/etc/resolv.conf"))
        #expect(!fm.fileExists(atPath: root + "/dev"))
        #expect(stat(root + "/etc", &st) == 0 && st.st_mtim.tv_sec == 1_000_000)

        // /etc a symlink to an absolute path: resolved inside the root, never the host's.
        try fm.removeItem(atPath: root + "/etc")
        try fm.createSymbolicLink(atPath: root + "/etc", withDestinationPath: outside)
        let again = try ChrootRoot(rootfs: root)
        try again.place(etcFiles: [("hosts", Array("ours\n".utf8))])
        try again.restore()
        #expect(try fm.contentsOfDirectory(atPath: outside).isEmpty)
    }
}
