import Foundation
import RBuild
import RBuildOCI
import Testing

@Suite("rbuild run IMAGE, as an unprivileged user", .enabled(if: Env.enabled))
struct RunImageTests {
    /// busybox as one layer, plus a second layer that deletes /bin/vi, makes /etc opaque
    /// (keeping only what it brings) and adds /hello.
    func twoLayerImage(_ fs: Rootfs) throws -> [String] {
        let root = ["--root", fs.dir + "/state"]
        #expect(try rbuild(["import"] + root + [fs.path, "base:1"]).status == 0)
        let store = try ImageStore(root: fs.dir + "/state")
        let (_, base) = try store.manifest(of: try #require(try store.lookup("base:1")), platform: nil)
        var config = try decodeJSON(ImageConfig.self, from: try store.content.read(base.config.digest), what: "config")
        let script = """
        import io, sys, tarfile
        with tarfile.open(sys.argv[1], "w") as t:
            for name, data in [("bin/.wh.vi", b""), ("etc/.wh..wh..opq", b""), ("etc/motd", b"top layer\\n"), ("hello", b"hi\\n")]:
                i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o644; t.addfile(i, io.BytesIO(data))
        """
        let tarPath = fs.dir + "/layer2.tar"
        #expect(try runProcess("/usr/bin/python3", ["-c", script, tarPath]).status == 0)
        let fd = open(tarPath, O_RDONLY)
        defer { close(fd) }
        let (digest, size) = try store.content.ingest(fd: fd)
        config.rootfs.diff_ids.append(digest)
        config.config?.Cmd = ["/bin/sh", "-c", "echo default-cmd"]
        config.config?.WorkingDir = "/etc"
        let configBytes = try canonicalJSON(config)
        let configDigest = try store.content.put(configBytes)
        let manifest = Manifest(mediaType: MediaType.ociManifest,
                                config: Descriptor(mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                                layers: base.layers + [Descriptor(mediaType: MediaType.ociLayer, digest: digest, size: size)])
        let bytes = try canonicalJSON(manifest)
        let d = try store.content.put(bytes)
        try store.tag("two:1", Descriptor(mediaType: MediaType.ociManifest, digest: d, size: Int64(bytes.count)))
        return root
    }

    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func layersWhiteoutsAndImageConfig(snapshotter: String) throws {
        let fs = try Rootfs()
        let root = try twoLayerImage(fs) + ["--snapshotter", snapshotter]
        let r = try rbuild(["run"] + root + ["two:1", "--", "/bin/sh", "-c",
            "test -e /bin/vi && echo vi-present; cat /hello; ls /etc; pwd; echo scratch > /tmp/x"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "hi\nhostname\nhosts\nmotd\nresolv.conf\n/etc\n", "\(r.stdout)")
        // The image's CMD when no command is given; nothing written survives the run.
        let d = try rbuild(["run"] + root + ["two:1"])
        #expect(d.stdout == "default-cmd\n", "\(d.stderr)")
        let again = try rbuild(["run"] + root + ["two:1", "--", "/bin/sh", "-c", "test -e /tmp/x || echo fresh"])
        #expect(again.stdout == "fresh\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fs.dir + "/state/run").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: fs.dir + "/state/snapshots/\(snapshotter)/active").isEmpty)
    }

    /// Ctrl-C (SIGINT to rbuild) ends the command, and the run leaves nothing behind: no scratch
    /// directory, no active snapshot, no mount (mounts only ever exist in the sandbox's namespace).
    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func interruptedRunCleansUp(snapshotter: String) throws {
        let fs = try Rootfs()
        let root = try twoLayerImage(fs) + ["--snapshotter", snapshotter]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.binary)
        p.arguments = ["run"] + root + ["two:1", "--", "/bin/sh", "-c", "echo started; sleep 30"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Interrupt once the command runs in the sandbox (it said so).
        #expect(read(out, until: "started").contains("started"), "the command never started")
        let interrupted = Date()
        let runDir = fs.dir + "/state/run"
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(Date().timeIntervalSince(interrupted) < 25, "SIGINT ended the run, not the sleep's end")
        #expect(p.terminationStatus == 130, "128 + SIGINT")
        #expect(try FileManager.default.contentsOfDirectory(atPath: runDir).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: fs.dir + "/state/snapshots/\(snapshotter)/active").isEmpty)
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains(fs.dir), "no mount of the run is visible here")
    }

    @Test func runImageErrors() throws {
        let fs = try Rootfs()
        let missing = try rbuild(["run", "--root", fs.dir + "/state", "nope:1", "--", "true"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no such image: nope:1"))
    }
}
