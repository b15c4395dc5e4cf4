import Foundation
import RBuild
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Runs `spec` in this process with its stdout on a pipe.
func runCapturing(_ spec: SandboxSpec) throws -> (Int32, String) {
    var spec = spec
    var out: [Int32] = [0, 0]
    guard pipe(&out) == 0 else { throw POSIXError(.EMFILE) }
    spec.stdout = out[1]
    let status = try Sandbox.run(spec)
    close(out[1])
    defer { close(out[0]) }
    return (status, readAll(out[0]))
}

@Suite("an overlayfs root mounted in the sandbox's user namespace", .enabled(if: Env.enabled))
struct OverlayRootTests {
    /// lower = the busybox root filesystem; upper, work, merged = empty directories.
    func layout(_ fs: Rootfs) throws -> (spec: SandboxSpec, upper: String) {
        for d in ["upper", "work", "merged"] {
            try FileManager.default.createDirectory(atPath: fs.dir + "/" + d, withIntermediateDirectories: true)
        }
        var spec = SandboxSpec(rootfs: fs.dir + "/merged", argv: [])
        spec.overlay = OverlayRoot(lowerDirs: [fs.path], upperDir: fs.dir + "/upper", workDir: fs.dir + "/work")
        return (spec, fs.dir + "/upper")
    }

    @Test("changes land in the upper directory in overlay format; the lower is untouched")
    func changesGoToUpper() throws {
        let fs = try Rootfs()
        var (spec, upper) = try layout(fs)
        spec.argv = ["/bin/sh", "-c", "echo new > /new && rm /bin/vi && echo extra >> /etc/group && mkdir -p /srv/a && cat /new"]
        let (status, output) = try runCapturing(spec)
        #expect(status == 0)
        #expect(output == "new\n")

        #expect((try? String(contentsOfFile: upper + "/new", encoding: .utf8)) == "new\n")
        var st = stat()
        #expect(lstat(upper + "/bin/vi", &st) == 0, "a whiteout for the deleted file")
        #expect((st.st_mode & S_IFMT) == S_IFCHR && st.st_rdev == 0)
        #expect(FileManager.default.fileExists(atPath: upper + "/srv/a"))
        #expect((try String(contentsOfFile: upper + "/etc/group", encoding: .utf8)).hasSuffix("extra\n"))
        // The lower layer is exactly as before.
        #expect(FileManager.default.fileExists(atPath: fs.path + "/bin/vi"))
        #expect(!FileManager.default.fileExists(atPath: fs.path + "/new"))
        #expect(!(try String(contentsOfFile: fs.path + "/etc/group", encoding: .utf8)).contains("extra"))
        // Nothing was mounted on the host: the mount point is still an empty directory.
        #expect(try FileManager.default.contentsOfDirectory(atPath: fs.dir + "/merged") == [])
    }

    @Test("several lower layers, topmost first, and a read-only overlay without an upper")
    func layersAndReadOnly() throws {
        let fs = try Rootfs()
        let top = fs.dir + "/top"
        try FileManager.default.createDirectory(atPath: top + "/etc", withIntermediateDirectories: true)
        try "from-top\n".write(toFile: top + "/etc/motd", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: fs.dir + "/merged", withIntermediateDirectories: true)
        var spec = SandboxSpec(rootfs: fs.dir + "/merged", argv: ["/bin/sh", "-c", "cat /etc/motd; touch /x 2>/dev/null || echo read-only"])
        spec.overlay = OverlayRoot(lowerDirs: [top, fs.path])
        let (status, output) = try runCapturing(spec)
        #expect(status == 0)
        #expect(output == "from-top\nread-only\n")
    }

    @Test("a missing layer directory is named")
    func missingLayer() throws {
        let fs = try Rootfs()
        try FileManager.default.createDirectory(atPath: fs.dir + "/merged", withIntermediateDirectories: true)
        var spec = SandboxSpec(rootfs: fs.dir + "/merged", argv: ["/bin/true"])
        spec.overlay = OverlayRoot(lowerDirs: [fs.dir + "/nope"])
        #expect {
            try Sandbox.run(spec)
        } throws: { error in
            (error as? RuntimeError)?.message == "overlay directory \(fs.dir)/nope does not exist"
        }
    }
}
