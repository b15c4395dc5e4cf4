import Foundation
import Testing

@Suite("cross-architecture runs with no privilege", .enabled(if: Env.enabled))
struct EmulationTests {
    @Test("the host has no binfmt handler for aarch64: emulation comes from the sandbox alone")
    func hostHasNoHandler() {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/sys/fs/binfmt_misc")) ?? []
        #expect(!entries.contains { $0.contains("aarch64") }, "\(entries)")
    }

    @Test("uname -m says aarch64 in the arm64 root filesystem and x86_64 in the amd64 one")
    func unameUnderEmulation() throws {
        let arm = try Rootfs(arch: "arm64")
        let r = try arm.run(["--platform", "linux/arm64"], ["/bin/uname", "-m"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "aarch64\n")
        let amd = try Rootfs()
        #expect(try amd.run(["--platform", "linux/amd64"], ["/bin/uname", "-m"]).stdout == "x86_64\n")
    }

    @Test("a shell script that starts other binaries runs entirely under emulation")
    func childProcessesAreEmulated() throws {
        let arm = try Rootfs(arch: "arm64")
        let script = """
            /bin/uname -m > /tmp/arch
            n=$(/bin/ls /bin | /bin/wc -l)
            /bin/test "$n" -gt 100 && /bin/echo many-applets
            /bin/sh -c '/bin/cat /tmp/arch'
            /bin/grep -c F /proc/sys/fs/binfmt_misc/rbuild-aarch64
            """
        let r = try arm.run(["--platform", "linux/arm64"], ["/bin/sh", "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "many-applets\naarch64\n1\n", "\(r.stdout)")
    }

    /// busybox's shell runs an applet named without a path as /proc/self/exe with argv[0] set to
    /// the applet: that works only with binfmt's P flag (preserve argv[0]).
    @Test("commands found on PATH keep their argv[0] under emulation")
    func argv0IsPreserved() throws {
        let arm = try Rootfs(arch: "arm64")
        let r = try arm.run(["--platform", "linux/arm64"], ["/bin/sh", "-c", "echo hi > /tmp/f; cat /tmp/f; busybox cat /tmp/f; uname -m"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "hi\nhi\naarch64\n", "\(r.stdout)")
    }

    @Test("without --platform, a foreign binary is named as such")
    func foreignBinaryWithoutPlatform() throws {
        let arm = try Rootfs(arch: "arm64")
        let r = try arm.run([], ["/bin/uname", "-m"])
        #expect(r.status == 126)
        #expect(r.stderr.contains("exec format error: /bin/uname is not a linux/amd64 program"), "\(r.stderr)")
    }

    @Test("a missing qemu is reported before anything runs")
    func missingQemu() throws {
        let arm = try Rootfs(arch: "arm64")
        var env = ProcessInfo.processInfo.environment
        env["RBUILD_QEMU_DIR"] = arm.dir + "/no-qemu-here"
        let r = try rbuild(["run", "--rootfs", arm.path, "--platform", "linux/arm64", "--", "/bin/touch", "/ran"],
                           environment: env)
        #expect(r.status == 125)
        #expect(r.stderr == "rbuild: cannot run linux/arm64 binaries: qemu-aarch64-static was not found in \(arm.dir)/no-qemu-here; install it with `apt install qemu-user-static`\n")
        #expect(!FileManager.default.fileExists(atPath: arm.path + "/ran"))
    }

    @Test("rbuild info lists the platforms and how each runs")
    func infoPlatforms() throws {
        let r = try rbuild(["info", "--format", "json"])
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let platforms = (json?["platforms"] as? [[String: Any]]) ?? []
        let byName = Dictionary(uniqueKeysWithValues: platforms.compactMap { p in
            (p["platform"] as? String).map { ($0, p) }
        })
        #expect(byName["linux/amd64"]?["how"] as? String == "native")
        #expect((byName["linux/arm64"]?["how"] as? String)?.contains("qemu-aarch64-static") == true)
        #expect(byName["linux/arm64"]?["supported"] as? Bool == true)
    }
}
