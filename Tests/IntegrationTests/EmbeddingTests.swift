import Foundation
import RBuild
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("the embedding API, as an unprivileged user", .enabled(if: Env.enabled))
struct EmbeddingTests {
    @Test("Sandbox.run with pipes for stdout and stderr, many times in one process")
    func capturesOutput() throws {
        let fs = try Rootfs()
        for i in 0..<5 {
            var out: [Int32] = [0, 0], err: [Int32] = [0, 0]
            #expect(pipe(&out) == 0 && pipe(&err) == 0)
            var spec = SandboxSpec(rootfs: fs.path, argv: ["/bin/sh", "-c", "echo out-\(i); echo err-\(i) >&2; exit \(i)"])
            spec.stdout = out[1]
            spec.stderr = err[1]
            let status = try Sandbox.run(spec)
            close(out[1])
            close(err[1])
            #expect(status == Int32(i))
            #expect(readAll(out[0]) == "out-\(i)\n")
            #expect(readAll(err[0]) == "err-\(i)\n")
            close(out[0])
            close(err[0])
        }
    }

    @Test("Builder.build builds and exports an OCI layout and a local image through the library alone")
    func buildAndExport() throws {
        let fs = try Rootfs()
        let state = fs.dir + "/state"
        let store = try StateDirectory.open(state)
        _ = try store.add(platformManifest: try store.importRootfs(fs.path, platform: Platform.host), as: "busybox:latest")
        let ctx = fs.dir + "/ctx"
        try FileManager.default.createDirectory(atPath: ctx, withIntermediateDirectories: true)
        try "FROM busybox\nLABEL made=embedded\nRUN echo embedded > /e\n".write(toFile: ctx + "/Dockerfile", atomically: false, encoding: .utf8)
        var options = BuildOptions()
        options.contextDirectory = ctx
        try Builder.load(dockerfile: ctx + "/Dockerfile", into: &options)
        let out = fs.dir + "/layout"
        let result = try Builder(stateDirectory: state).build(options, exporters: [OCIExporter(dest: out, tar: false), ImageExporter()],
                                                              tags: ["emb:1"])
        #expect(result.images.count == 1 && result.names == ["emb:1"])
        #expect(try store.lookup("emb:1")?.digest == result.images[0].manifest.digest, "type=image keeps the layers as built")
        // Tools nobody here wrote read what the library wrote.
        let digest = try runProcess("/usr/bin/skopeo", ["inspect", "--format", "{{.Digest}}", "oci:\(out):1"])
        #expect(digest.stdout.trimmed == result.descriptor.digest.description, "\(digest.stderr)")
        let validate = try runProcess("/usr/bin/oci-image-tool", ["validate", "--type", "image", "--ref", "name=1", out])
        #expect(validate.status == 0, "validate: \(validate.stdout) \(validate.stderr)")
        let meta = String(decoding: try result.metadataJSON(), as: UTF8.self)
        #expect(meta.contains(result.descriptor.digest.description) && meta.contains(result.imageID.description), "\(meta)")
        #expect(result.configDigest == result.imageID)
    }

    @Test("a missing executable is a typed error with exit code 127")
    func typedErrors() throws {
        let fs = try Rootfs()
        #expect {
            try Sandbox.run(SandboxSpec(rootfs: fs.path, argv: ["/nope"]))
        } throws: { error in
            guard let e = error as? RuntimeError else { return false }
            return e.code == .executableNotFound && e.exitCode == 127
        }
    }
}

func readAll(_ fd: Int32) -> String {
    var data = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 { break }
        data += buf[0..<n]
    }
    return String(decoding: data, as: UTF8.self)
}
