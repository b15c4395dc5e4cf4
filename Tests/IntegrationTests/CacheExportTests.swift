import Foundation
import Testing

/// State dirs that each hold the same busybox (imported with SOURCE_DATE_EPOCH, so the same
/// manifest digest and so the same step keys), for a build in one whose cache another imports:
/// what a CI job with an empty state dir does.
final class CacheFixture {
    let fs: Rootfs
    let arm: Rootfs?
    var dir: String { fs.dir }
    var env: [String: String]

    init(arm64: Bool = false) throws {
        fs = try Rootfs()
        arm = arm64 ? try Rootfs(arch: "arm64") : nil
        env = ProcessInfo.processInfo.environment
        env["SOURCE_DATE_EPOCH"] = "1700000000"
        env["DOCKER_CONFIG"] = fs.dir + "/docker"
    }

    /// `--root DIR/name`, busybox imported there the first time.
    func state(_ name: String) throws -> [String] {
        let root = dir + "/" + name
        if !FileManager.default.fileExists(atPath: root) {
            let r = try rbuild(["import", "--root", root, fs.path, "busybox:latest"], environment: env)
            guard r.status == 0 else { throw FixtureError(message: "import: \(r.stderr)") }
            if let arm {
                let a = try rbuild(["import", "--root", root, "--platform", "linux/arm64", arm.path, "busybox:latest"], environment: env)
                guard a.status == 0 else { throw FixtureError(message: "import arm64: \(a.stderr)") }
            }
        }
        return ["--root", root]
    }

    func build(_ state: String, _ args: [String], _ context: String) throws -> Result {
        try rbuild(["build"] + (try self.state(state)) + ["--progress", "plain"] + args + [context], environment: env)
    }

    func context(_ files: [String: String], name: String = "ctx") throws -> String {
        let ctx = dir + "/" + name
        for (path, content) in files {
            try FileManager.default.createDirectory(atPath: ctx, withIntermediateDirectories: true)
            try content.write(toFile: ctx + "/" + path, atomically: false, encoding: .utf8)
        }
        return ctx
    }

    /// The `containerimage.digest` of a --metadata-file.
    func digest(_ metadata: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: metadata))
        return ((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["containerimage.digest"] as? String) ?? ""
    }

    func file(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    /// The entries of an exported cache's index (type=local).
    func cacheEntries(_ cache: String) throws -> [[String: Any]] {
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: cache + "/index.json"))) as? [String: Any]
        let top = (index?["manifests"] as? [[String: Any]])?.first?["digest"] as? String ?? ""
        let blob = cache + "/blobs/sha256/" + top.dropFirst("sha256:".count)
        let doc = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: blob))) as? [String: Any]
        return doc?["manifests"] as? [[String: Any]] ?? doc?["layers"] as? [[String: Any]] ?? []
    }
}

/// Issue 17: `--cache-to` and `--cache-from`, local, registry and inline, as an unprivileged user.
@Suite("cache export and import, as an unprivileged user", .enabled(if: Env.enabled))
struct CacheExportTests {
    static let dockerfile = """
        FROM busybox AS builder
        RUN echo built > /artifact
        RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/log; wc -l < /cache/log > /count'
        FROM busybox
        COPY --from=builder /artifact /copied
        COPY a.txt /a.txt
        RUN cat /copied /a.txt > /both
        """
    static let finalSteps = ["[2/4] COPY --from=builder /artifact /copied", "[3/4] COPY a.txt /a.txt", "[4/4] RUN cat /copied /a.txt > /both"]

    /// Exported to a directory, imported into a fresh state dir (with another snapshotter): every
    /// step of the image CACHED, the same image digest, the builder stage neither run nor
    /// fetched (its layers stay in the cache); with --no-cache, nothing is CACHED.
    @Test func localExportImport() throws {
        let c = try CacheFixture()
        let ctx = try c.context(["Dockerfile": Self.dockerfile, "a.txt": "hello\n"])
        let cache = c.dir + "/cache"
        let a = try c.build("a", ["--cache-to", "type=local,dest=\(cache),mode=max", "--metadata-file", c.dir + "/a.json", "-t", "app:1"], ctx)
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stderr.contains("exporting cache to type=local,dest=\(cache)"), "\(a.stderr)")
        #expect(FileManager.default.fileExists(atPath: cache + "/oci-layout"))
        let entries = try c.cacheEntries(cache)
        #expect(entries.contains { $0["mediaType"] as? String == "application/vnd.buildkit.cacheconfig.v0" })
        let layers = entries.filter { ($0["mediaType"] as? String ?? "").contains("layer") }
        #expect(layers.count == 5, "five steps wrote a layer: \(entries)")
        #expect(layers.allSatisfy { $0["mediaType"] as? String == "application/vnd.oci.image.layer.v1.tar+gzip" })
        #expect(layers.allSatisfy { (($0["annotations"] as? [String: String])?["containerd.io/uncompressed"] ?? "").hasPrefix("sha256:") })

        let b = try c.build("b", ["--cache-from", "type=local,src=\(cache)", "--snapshotter", "copy", "--metadata-file", c.dir + "/b.json", "-t", "app:1"], ctx)
        #expect(b.status == 0, "\(b.stderr)")
        #expect(b.stderr.contains("[internal] importing cache manifest from type=local,src=\(cache)"), "\(b.stderr)")
        #expect(cachedSteps(b.stderr) == Self.finalSteps, "\(b.stderr)")
        #expect(!b.stderr.contains("[builder"), "the builder stage is not needed: \(b.stderr)")
        #expect(try c.digest(c.dir + "/b.json") == c.digest(c.dir + "/a.json"))
        // Lazy: the final image's three layers were fetched, the builder stage's two were not.
        let fetched = layers.filter { FileManager.default.fileExists(atPath: c.dir + "/b/blobs/sha256/" + ($0["digest"] as! String).dropFirst(7)) }
        #expect(fetched.count == 3, "\(fetched)")
        let run = try rbuild(["run"] + c.state("b") + ["app:1", "--", "cat", "/both"], environment: c.env)
        #expect(run.stdout == "built\nhello\n", "\(run.stderr)")
        // A second build in b hits its own cache index now, no import needed.
        let again = try c.build("b", ["--snapshotter", "copy"], ctx)
        #expect(cachedSteps(again.stderr) == Self.finalSteps, "\(again.stderr)")
        // --no-cache ignores the import.
        let none = try c.build("n", ["--cache-from", "type=local,src=\(cache)", "--no-cache"], ctx)
        #expect(none.status == 0, "\(none.stderr)")
        #expect(cachedSteps(none.stderr).isEmpty, "\(none.stderr)")
        #expect(!none.stderr.contains("importing cache manifest"))
        // By digest (index.json's entry), and a tag the directory lacks (a warning naming its tags).
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: cache + "/index.json"))) as? [String: Any]
        let top = ((index?["manifests"] as? [[String: Any]])?.first?["digest"] as? String) ?? ""
        let byDigest = try c.build("g", ["--cache-from", "type=local,src=\(cache),digest=\(top)"], ctx)
        #expect(cachedSteps(byDigest.stderr) == Self.finalSteps, "\(byDigest.stderr)")
        let badTag = try c.build("h", ["--cache-from", "type=local,src=\(cache),tag=v2"], ctx)
        #expect(badTag.status == 0 && badTag.stderr.contains("has no cache named v2 (it has: latest)"), "\(badTag.stderr)")
        // A cache that is not there is a warning, as in buildx; the build goes on.
        let missing = try c.build("m", ["--cache-from", "type=local,src=\(c.dir)/nowhere"], ctx)
        #expect(missing.status == 0, "\(missing.stderr)")
        #expect(missing.stderr.contains("WARNING: cache type=local,src=\(c.dir)/nowhere not imported"), "\(missing.stderr)")
    }

    /// mode=min holds the final stage's steps only; mode=max every stage's. Exporting again to
    /// the same directory leaves no blob of the first export behind.
    @Test func minAndMaxModes() throws {
        let c = try CacheFixture()
        let ctx = try c.context(["Dockerfile": Self.dockerfile, "a.txt": "hello\n"])
        let minCache = c.dir + "/min", maxCache = c.dir + "/max"
        let a = try c.build("a", ["--cache-to", "type=local,dest=\(minCache)", "--cache-to", "type=local,dest=\(maxCache),mode=max"], ctx)
        #expect(a.status == 0, "\(a.stderr)")
        #expect(try c.cacheEntries(minCache).filter { ($0["mediaType"] as? String ?? "").contains("layer") }.count == 3)
        let builder = ["--target", "builder"]
        let fromMin = try c.build("b", builder + ["--cache-from", "type=local,src=\(minCache)"], ctx)
        #expect(fromMin.status == 0, "\(fromMin.stderr)")
        #expect(cachedSteps(fromMin.stderr).isEmpty, "min holds no builder step: \(fromMin.stderr)")
        // Two imports at once: the builder's steps come from the one that has them.
        let fromMax = try c.build("c", builder + ["--cache-from", "type=local,src=\(minCache)", "--cache-from", "type=local,src=\(maxCache)"], ctx)
        #expect(cachedSteps(fromMax.stderr) == ["[builder 2/3] RUN echo built > /artifact",
                                                 "[builder 3/3] RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/log; wc -l < /cache/log > /count'"],
                "\(fromMax.stderr)")
        // An import re-exported (mode=max) keeps the steps this build never reached.
        let re = c.dir + "/re"
        let reexport = try c.build("d", ["--cache-from", "type=local,src=\(maxCache)", "--cache-to", "type=local,dest=\(re),mode=max"], ctx)
        #expect(reexport.status == 0, "\(reexport.stderr)")
        #expect(try c.cacheEntries(re).filter { ($0["mediaType"] as? String ?? "").contains("layer") }.count == 5)
        // Exported again with a changed file: the new export replaces the old, whose blobs go.
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: maxCache + "/blobs/sha256"))
        try "changed\n".write(toFile: ctx + "/a.txt", atomically: false, encoding: .utf8)
        let changed = try c.build("a", ["--cache-to", "type=local,dest=\(maxCache),mode=max"], ctx)
        #expect(changed.status == 0, "\(changed.stderr)")
        let after = Set(try FileManager.default.contentsOfDirectory(atPath: maxCache + "/blobs/sha256"))
        #expect(after != before)
        #expect(after.count == before.count, "as many blobs as one export has: \(before.count) → \(after.count)")
    }

    /// A record whose chain was made on another result of its input is not stacked on this one:
    /// the local step's result stays and the next step runs again.
    @Test func localResultNeverReplaced() throws {
        let c = try CacheFixture()
        let first = "FROM busybox\nRUN head -c 16 /dev/urandom | od -x > /r\n"
        let ctx = try c.context(["Dockerfile": first + "RUN cp /r /r2\n"])
        let cache = c.dir + "/cache"
        let a = try c.build("a", ["--cache-to", "type=local,dest=\(cache)"], ctx)
        #expect(a.status == 0, "\(a.stderr)")
        // b runs the first step itself (its own /r), not the second.
        let b1 = try c.build("b", [], try c.context(["Dockerfile": first], name: "first"))
        #expect(b1.status == 0, "\(b1.stderr)")
        let b2 = try c.build("b", ["--cache-from", "type=local,src=\(cache)", "-o", "type=local,dest=\(c.dir)/out"], ctx)
        #expect(b2.status == 0, "\(b2.stderr)")
        #expect(cachedSteps(b2.stderr) == ["[2/3] RUN head -c 16 /dev/urandom | od -x > /r"], "\(b2.stderr)")
        #expect(try c.file(c.dir + "/out/r") == c.file(c.dir + "/out/r2"))
    }

    /// `cache-mounts=true` exports each cache mount's contents; a fresh state dir importing it
    /// starts its cache mount from them.
    @Test func cacheMountsRestored() throws {
        let c = try CacheFixture()
        let ctx = try c.context(["Dockerfile": Self.dockerfile, "a.txt": "hello\n"])
        let cache = c.dir + "/cache", plain = c.dir + "/plain"
        let a = try c.build("a", ["--cache-to", "type=local,dest=\(cache),mode=max,cache-mounts=true",
                                  "--cache-to", "type=local,dest=\(plain),mode=max"], ctx)
        #expect(a.status == 0, "\(a.stderr)")
        #expect(try c.cacheEntries(cache).contains { ($0["annotations"] as? [String: String])?["io.rbuild.cache-mount.id"] == "/cache" })
        #expect(try !c.cacheEntries(plain).contains { ($0["annotations"] as? [String: String])?["io.rbuild.cache-mount.id"] != nil },
                "cache mounts stay out unless asked")
        // The cache-mount step runs again (no-cache-filter) in a fresh state dir: its cache holds
        // the first build's line, so the count is 2; without the mounts exported, 1.
        for (state, src, count) in [("b", cache, "2"), ("c", plain, "1")] {
            let out = c.dir + "/out-" + state
            let r = try c.build(state, ["--target", "builder", "--no-cache-filter", "builder", "--cache-from", "type=local,src=\(src)",
                                        "-o", "type=local,dest=\(out)"], ctx)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try c.file(out + "/count").trimmed == count, "\(state)")
        }
    }

    /// A layer blob of the cache changed after the export: refused by digest when a step needs
    /// it, the build failing with a message that names the layer and what to do; nothing of it
    /// is stored.
    @Test func tamperedBlobRefused() throws {
        let c = try CacheFixture()
        let ctx = try c.context(["Dockerfile": Self.dockerfile, "a.txt": "hello\n"])
        let cache = c.dir + "/cache"
        #expect(try c.build("a", ["--cache-to", "type=local,dest=\(cache)"], ctx).status == 0)
        var tampered: [String] = []
        for e in try c.cacheEntries(cache) where (e["mediaType"] as? String ?? "").contains("layer") {
            let digest = (e["digest"] as! String)
            let path = cache + "/blobs/sha256/" + digest.dropFirst(7)
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            bytes[bytes.count / 2] ^= 0xff
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            tampered.append(digest)
        }
        let b = try c.build("b", ["--cache-from", "type=local,src=\(cache)", "-t", "app:1"], ctx)
        #expect(b.status == 1, "\(b.stderr)")
        #expect(b.stderr.contains("refused"), "\(b.stderr)")
        #expect(tampered.contains { b.stderr.contains($0) }, "the message names the layer: \(b.stderr)")
        #expect(b.stderr.contains("export it again, or build without this --cache-from"), "\(b.stderr)")
        for d in tampered {
            #expect(!FileManager.default.fileExists(atPath: c.dir + "/b/blobs/sha256/" + d.dropFirst(7)))
        }
        let check = try rbuild(["check"] + c.state("b"), environment: c.env)
        #expect(check.status == 0, "the state dir is sound: \(check.stdout) \(check.stderr)")
    }

    /// Through a registry with authentication: an index (the default) and an image manifest
    /// (image-manifest=true), both imported into fresh state dirs with the same result; and the
    /// inline cache of a pushed image, imported by naming the image.
    @Test func registryAndInline() throws {
        let c = try CacheFixture()
        let registry = try LocalRegistry(in: c.dir + "/registry", users: ["alice": "s3cret"])
        let login = try rbuild(["login", "-u", "alice", "--password-stdin", registry.host], stdin: "s3cret\n", environment: c.env)
        #expect(login.status == 0, "\(login.stderr)")
        let ctx = try c.context(["Dockerfile": Self.dockerfile, "a.txt": "hello\n"])
        let ref = "\(registry.host)/cache/app"
        let a = try c.build("a", ["--cache-to", "type=registry,ref=\(ref):index,mode=max",
                                  "--cache-to", "type=registry,ref=\(ref):manifest,mode=max,image-manifest=true,compression=zstd",
                                  "--cache-to", "type=inline", "-o", "type=registry,name=\(ref):image", "--metadata-file", c.dir + "/a.json"], ctx)
        #expect(a.status == 0, "\(a.stderr)")
        let creds = "--creds=alice:s3cret"
        let index = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "--tls-verify=false", creds, "docker://\(ref):index"])
        #expect(index.stdout.contains("application/vnd.oci.image.index.v1+json") && index.stdout.contains("application/vnd.buildkit.cacheconfig.v0"),
                "\(index.stdout) \(index.stderr)")
        let manifest = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "--tls-verify=false", creds, "docker://\(ref):manifest"])
        #expect(manifest.stdout.contains("\"config\":{\"digest\"") || manifest.stdout.contains("application/vnd.buildkit.cacheconfig.v0"),
                "\(manifest.stdout)")
        #expect(manifest.stdout.contains("tar+zstd"), "\(manifest.stdout)")
        let config = try runProcess("/usr/bin/skopeo", ["inspect", "--config", "--raw", "--tls-verify=false", creds, "docker://\(ref):image"])
        #expect(config.stdout.contains("moby.buildkit.cache.v0"), "\(config.stdout) \(config.stderr)")
        let want = try c.digest(c.dir + "/a.json")
        for (state, from) in [("b", "type=registry,ref=\(ref):index"), ("c", "\(ref):manifest"), ("d", "\(ref):image")] {
            let r = try c.build(state, ["--cache-from", from, "--cache-to", "type=inline", "-o", "type=registry,name=\(ref):\(state)",
                                        "--metadata-file", c.dir + "/\(state).json"], ctx)
            #expect(r.status == 0, "\(state): \(r.stderr)")
            #expect(cachedSteps(r.stderr) == Self.finalSteps, "\(state): \(r.stderr)")
            #expect(try c.digest(c.dir + "/\(state).json") == want, "\(state): the same image, pushed")
        }
        // A tag that is not there: a warning, the build goes on.
        let missing = try c.build("e", ["--cache-from", "\(ref):nothing"], ctx)
        #expect(missing.status == 0, "\(missing.stderr)")
        #expect(missing.stderr.contains("WARNING: cache \(ref):nothing not imported"), "\(missing.stderr)")
    }

    /// Two platforms in one export (buildx#1044): a fresh state dir importing it finds every
    /// step of both, and builds the same index.
    @Test func twoPlatformsOneExport() throws {
        let c = try CacheFixture(arm64: true)
        let ctx = try c.context(["Dockerfile": """
            FROM busybox
            RUN uname -m > /arch
            COPY a.txt /a.txt
            """, "a.txt": "hi\n"])
        let cache = c.dir + "/cache"
        let platforms = ["--platform", "linux/amd64,linux/arm64"]
        let a = try c.build("a", platforms + ["--cache-to", "type=local,dest=\(cache)", "-t", "m:1", "--metadata-file", c.dir + "/a.json"], ctx)
        #expect(a.status == 0, "\(a.stderr)")
        let b = try c.build("b", platforms + ["--cache-from", "type=local,src=\(cache)", "-t", "m:1", "--metadata-file", c.dir + "/b.json"], ctx)
        #expect(b.status == 0, "\(b.stderr)")
        #expect(Set(cachedSteps(b.stderr)) == ["[linux/amd64 2/3] RUN uname -m > /arch", "[linux/amd64 3/3] COPY a.txt /a.txt",
                                                "[linux/arm64 2/3] RUN uname -m > /arch", "[linux/arm64 3/3] COPY a.txt /a.txt"], "\(b.stderr)")
        #expect(try c.digest(c.dir + "/b.json") == c.digest(c.dir + "/a.json"))
    }
}
