import Foundation
import Testing

/// A state dir whose busybox layer blob has one byte flipped on disk, as a failing disk or a
/// stray tool would leave it. The state dir is fresh, so the layer has never been unpacked: run
/// and build meet the corrupt bytes in the unpack, not in a cached snapshot.
final class CorruptImage {
    let fs: Rootfs
    var state: String { fs.dir + "/state" }
    var root: [String] { ["--root", state] }
    let layer: String

    init() throws {
        fs = try Rootfs()
        let imported = try rbuild(["import", "--root", fs.dir + "/state", fs.path, "bb:1"])
        guard imported.status == 0 else { throw FixtureError(message: "import failed: \(imported.stderr)") }
        let inspect = try rbuild(["inspect", "--root", fs.dir + "/state", "bb:1"])
        let json = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        let layers = (json?["manifest"] as? [String: Any])?["layers"] as? [[String: Any]]
        guard let digest = layers?.first?["digest"] as? String else { throw FixtureError(message: "no layer in \(inspect.stdout)") }
        layer = digest
        try flipMiddleByte(fs.dir + "/state/blobs/sha256/" + digest.dropFirst(7))
    }

    /// Flips one byte in the middle of `path` (a blob may be read-only: made writable first).
    func flipMiddleByte(_ path: String) throws {
        chmod(path, 0o644)
        let fd = open(path, O_RDWR)
        guard fd >= 0 else { throw FixtureError(message: "cannot open \(path)") }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        var b: UInt8 = 0
        pread(fd, &b, 1, st.st_size / 2)
        b ^= 0xff
        pwrite(fd, &b, 1, st.st_size / 2)
    }

    /// A failure that is rbuild's own clear error: an exit status below 128 (no signal, no
    /// abort), one line naming the blob, no crash report.
    func expectClearFailure(_ r: Result, naming what: String, _ comment: String) {
        #expect(r.status > 0 && r.status < 128, "\(comment): status \(r.status): \(r.stderr)")
        #expect(r.stderr.contains(layer), "\(comment): \(r.stderr)")
        #expect(r.stderr.contains(what), "\(comment): \(r.stderr)")
        #expect(!r.stderr.contains("PROGRAMMER ERROR") && !r.stderr.contains("Fatal error") && !r.stderr.contains("crashed"),
                "\(comment): \(r.stderr)")
    }

    /// Directories an interrupted unpack or export would leave.
    func leftovers() -> [String] {
        let find = try? runProcess("/usr/bin/find", [fs.dir, "-name", "tmp-*", "-o", "-name", ".*.rbuild-*"])
        return (find?.stdout ?? "").split(separator: "\n").map(String.init)
    }
}

@Suite("a corrupt blob in the store, as an unprivileged user", .enabled(if: Env.enabled))
struct CorruptStoreTests {
    @Test func saveFailsClearlyAndWritesNothing() throws {
        let c = try CorruptImage()
        for (output, dest) in [("type=oci", "out.tar"), ("type=docker", "docker.tar"), ("type=oci,tar=false", "layout")] {
            let path = c.fs.dir + "/" + dest
            let r = try rbuild(["save"] + c.root + ["bb:1", "-o", "\(output),dest=\(path)"])
            c.expectClearFailure(r, naming: "rbuild check --repair", output)
            #expect(r.stderr.contains("bb:1"), "\(r.stderr)")
            #expect(access(path, F_OK) != 0, "\(output) left \(path)")
        }
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func runAndBuildFailClearly(snapshotter: String) throws {
        let c = try CorruptImage()
        let run = try rbuild(["run"] + c.root + ["--snapshotter", snapshotter, "bb:1", "--", "true"])
        c.expectClearFailure(run, naming: "rbuild check --repair", "run")
        #expect(run.stderr.contains("bb:1"), "\(run.stderr)")

        let ctx = c.fs.dir + "/ctx"
        try FileManager.default.createDirectory(atPath: ctx, withIntermediateDirectories: true)
        try "FROM bb:1\nRUN true\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        let build = try rbuild(["build"] + c.root + ["--snapshotter", snapshotter, "--progress", "plain", ctx])
        c.expectClearFailure(build, naming: "rbuild check --repair", "build")
        // No partial snapshot stays behind for the next run to trust.
        #expect(c.leftovers().isEmpty, "\(c.leftovers())")
    }

    @Test func pushFailsClearlyAndTheRegistryGetsNothing() throws {
        let c = try CorruptImage()
        let registry = try LocalRegistry(in: c.fs.dir + "/registry")
        defer { registry.stop() }
        // One streamed PUT, and PATCHes of 64 KiB (RBUILD_UPLOAD_CHUNK): neither sends it all.
        for (repo, chunk) in [("corrupt/bb", nil), ("chunked/bb", "65536")] as [(String, String?)] {
            var env = ProcessInfo.processInfo.environment
            env["RBUILD_UPLOAD_CHUNK"] = chunk
            let push = try rbuild(["push"] + c.root + ["bb:1", "\(registry.host)/\(repo):1"], environment: env)
            c.expectClearFailure(push, naming: "rbuild check --repair", "push \(repo)")
            #expect(push.stderr.contains("cannot push"), "\(push.stderr)")
            for path in ["blobs/\(c.layer)", "manifests/1"] {
                let head = try runProcess("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I",
                                                            "http://\(registry.host)/v2/\(repo)/\(path)"])
                #expect(head.stdout == "404", "the registry has \(repo)/\(path): \(head.stdout)")
            }
        }
    }

    @Test func checkReportsRepairRemovesAndReimportRestores() throws {
        let c = try CorruptImage()
        let check = try rbuild(["check"] + c.root)
        #expect(check.status == 1, "\(check.stdout) \(check.stderr)")
        #expect(check.stdout.contains("corrupt \(c.layer)") && check.stdout.contains("used by bb:1"), "\(check.stdout)")
        #expect(check.stderr.contains("rbuild check --repair"), "\(check.stderr)")

        let repair = try rbuild(["check"] + c.root + ["--repair"])
        #expect(repair.status == 0, "\(repair.stderr)")
        #expect(repair.stdout.contains("\(c.layer)") && repair.stdout.contains("removed"), "\(repair.stdout)")
        #expect(access(c.state + "/blobs/sha256/" + c.layer.dropFirst(7), F_OK) != 0)

        let clean = try rbuild(["check"] + c.root)
        #expect(clean.status == 0 && clean.stdout.contains("all good"), "\(clean.stdout) \(clean.stderr)")
        let images = try rbuild(["images"] + c.root)
        #expect(images.status == 0 && images.stdout.contains("bb:1"), "\(images.stderr)")

        // The image is known to be incomplete, and says so.
        let save = try rbuild(["save"] + c.root + ["bb:1", "-o", "type=oci,dest=\(c.fs.dir)/out.tar"])
        c.expectClearFailure(save, naming: "missing", "save after repair")
        #expect(save.stderr.contains("pull, import or build it again"), "\(save.stderr)")
        let run = try rbuild(["run"] + c.root + ["bb:1", "--", "true"])
        c.expectClearFailure(run, naming: "missing", "run after repair")

        // Importing again makes it whole.
        #expect(try rbuild(["import"] + c.root + [c.fs.path, "bb:1"]).status == 0)
        let again = try rbuild(["run"] + c.root + ["bb:1", "--", "true"])
        #expect(again.status == 0, "\(again.stderr)")
        let saved = try rbuild(["save"] + c.root + ["bb:1", "-o", "type=oci,dest=\(c.fs.dir)/out.tar"])
        #expect(saved.status == 0, "\(saved.stderr)")
        #expect(try rbuild(["check"] + c.root).status == 0)
    }

    @Test func pruneVerifyRemovesCorruptBlobs() throws {
        let c = try CorruptImage()
        let prune = try rbuild(["prune"] + c.root + ["--verify"])
        #expect(prune.status == 0, "\(prune.stderr)")
        #expect(prune.stdout.contains("corrupt \(c.layer)") && prune.stdout.contains("removed"), "\(prune.stdout)")
        #expect(try rbuild(["check"] + c.root).status == 0)
    }
}
