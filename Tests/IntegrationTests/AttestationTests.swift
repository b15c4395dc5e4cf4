import Foundation
import Testing

/// Provenance and SBOM attestations as buildx attaches them (issue 21): an attestation manifest
/// per platform in the index (platform unknown/unknown, `vnd.docker.reference.*` annotations),
/// in-toto statements as its layers, checked with skopeo and by reading the statements.
@Suite("attestations, as an unprivileged user", .enabled(if: Env.enabled))
struct AttestationTests {
    /// The index of an OCI archive, and every blob of it by digest.
    func readArchive(_ archive: String, in dir: String) throws -> (index: [String: Any], blob: (String) throws -> [String: Any]) {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let x = try runProcess("/bin/tar", ["-xf", archive, "-C", dir])
        #expect(x.status == 0, "\(x.stderr)")
        func json(_ path: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any] ?? [:]
        }
        let top = try json(dir + "/index.json")
        let first = ((top["manifests"] as? [[String: Any]])?.first?["digest"] as? String) ?? ""
        let blob = { (digest: String) throws -> [String: Any] in try json(dir + "/blobs/sha256/" + digest.dropFirst(7)) }
        return (try blob(first), blob)
    }

    @Test func twoPlatformsWithProvenanceAndSBOM() throws {
        let b = try MultiPlatformBuildTests().fixture()
        let ctx = try b.context(["Dockerfile": """
            FROM busybox
            ARG GREETING=hello
            COPY note /note
            RUN echo "$GREETING" > /greeting
            """, "note": "a note\n"])
        let out = b.fs.dir + "/att.tar", again = b.fs.dir + "/again.tar"
        let env = ProcessInfo.processInfo.environment.merging(["SOURCE_DATE_EPOCH": "1700000000"]) { _, n in n }
        let args = ["--platform", "linux/amd64,linux/arm64", "--network", "none", "--provenance", "mode=max", "--sbom", "true",
                    "--build-arg", "GREETING=hi", "--secret", "id=token,env=HOME", "-t", "att:1"]
        let local = b.fs.dir + "/local"
        let r = try b.build(args + ["-o", "type=oci,dest=\(out)", "-o", "type=image", "-o", "type=local,dest=\(local)"], ctx, environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        // A local output holds them as files, per platform (BuildKit's names).
        for p in ["linux_amd64", "linux_arm64"] {
            let sbom = try String(contentsOfFile: "\(local)/\(p)/sbom.spdx.json", encoding: .utf8)
            let provenance = try String(contentsOfFile: "\(local)/\(p)/provenance.json", encoding: .utf8)
            #expect(sbom.contains("\"predicateType\":\"https://spdx.dev/Document\"") && provenance.contains("https://slsa.dev/provenance/v1"))
            #expect(try String(contentsOfFile: "\(local)/\(p)/greeting", encoding: .utf8) == "hi\n")
        }

        // skopeo: four manifests, two of them attestations naming the other two.
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:" + out])
        #expect(raw.status == 0, "\(raw.stderr)")
        let index = try JSONSerialization.jsonObject(with: Data(raw.stdout.utf8)) as? [String: Any] ?? [:]
        let entries = index["manifests"] as? [[String: Any]] ?? []
        #expect(entries.count == 4, "\(raw.stdout)")
        let images = entries.filter { ($0["platform"] as? [String: String])?["os"] == "linux" }
        let attestations = entries.filter { ($0["platform"] as? [String: String])?["os"] == "unknown" }
        #expect(images.count == 2 && attestations.count == 2, "\(raw.stdout)")
        for a in attestations {
            let ann = a["annotations"] as? [String: String] ?? [:]
            #expect(ann["vnd.docker.reference.type"] == "attestation-manifest")
            #expect(images.contains { $0["digest"] as? String == ann["vnd.docker.reference.digest"] }, "\(raw.stdout)")
        }

        // The statements: each names its image manifest, the provenance its sources and args
        // (never the secret), the SBOM its packages (busybox has no package database: none).
        let (_, blob) = try readArchive(out, in: b.fs.dir + "/x")
        for a in attestations {
            let subject = (a["annotations"] as? [String: String])?["vnd.docker.reference.digest"] ?? ""
            let manifest = try blob(a["digest"] as! String)
            let layers = manifest["layers"] as? [[String: Any]] ?? []
            #expect(Set(layers.compactMap { ($0["annotations"] as? [String: String])?["in-toto.io/predicate-type"] })
                    == ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"])
            for layer in layers {
                #expect(layer["mediaType"] as? String == "application/vnd.in-toto+json")
                let statement = try blob(layer["digest"] as! String)
                let subjects = statement["subject"] as? [[String: Any]] ?? []
                #expect((subjects.first?["digest"] as? [String: String])?["sha256"] == String(subject.dropFirst(7)))
                let predicate = statement["predicate"] as? [String: Any] ?? [:]
                let text = String(decoding: try JSONSerialization.data(withJSONObject: predicate, options: .withoutEscapingSlashes), as: UTF8.self)
                if statement["predicateType"] as? String == "https://slsa.dev/provenance/v1" {
                    #expect(text.contains("GREETING") && text.contains("\"hi\""), "\(text)")
                    #expect(text.contains("pkg:docker/busybox"), "the base image is a resolved dependency: \(text)")
                    #expect(text.contains("file://context"), "the context is one: \(text)")
                    #expect(text.contains("2023-11-14T22:13:20Z"), "times follow SOURCE_DATE_EPOCH: \(text)")
                    #expect(text.contains("RUN echo"), "mode=max lists the steps: \(text)")
                    #expect(!text.contains("token") && !text.contains(NSHomeDirectory()), "no secret: \(text)")
                } else {
                    #expect(predicate["spdxVersion"] as? String == "SPDX-2.3", "\(text)")
                }
            }
        }

        // Reproducible under SOURCE_DATE_EPOCH: built again from nothing, the same index.
        let again2 = try b.build(args + ["--no-cache", "-o", "type=oci,dest=\(again)"], ctx, environment: env)
        #expect(again2.status == 0, "\(again2.stderr)")
        let raw2 = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:" + again])
        #expect(raw2.stdout == raw.stdout, "the same attestations, byte for byte")

        // The local image keeps them; `rbuild inspect --attestations` shows them by platform.
        let shown = try rbuild(["inspect"] + b.root + ["--attestations", "att:1"])
        #expect(shown.status == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains("\"linux/arm64\"") && shown.stdout.contains("https://slsa.dev/provenance/v1"), "\(shown.stdout)")

        // They survive save and load, and a runnable platform is never an attestation.
        let saved = b.fs.dir + "/saved.tar"
        #expect(try rbuild(["save"] + b.root + ["-o", "type=oci,dest=\(saved)", "att:1"]).status == 0)
        let other = b.fs.dir + "/other"
        let load = try rbuild(["load", "--root", other, saved])
        #expect(load.status == 0, "\(load.stderr)")
        let loaded = try rbuild(["inspect", "--root", other, "--attestations", "att:1"])
        #expect(loaded.stdout.contains("\"linux/amd64\"") && loaded.stdout.contains("https://spdx.dev/Document"), "\(loaded.stdout) \(loaded.stderr)")
        let run = try rbuild(["run"] + b.root + ["--platform", "linux/amd64", "att:1", "--", "cat", "/greeting"])
        #expect(run.stdout == "hi\n", "\(run.stderr)")
    }

    /// A bake target's `attest` entries, as buildx reads them.
    @Test func bakeTargetAttest() throws {
        let b = try BuildFixture()
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN echo baked > /b\n", "docker-bake.hcl": """
            target "app" {
              attest = ["type=sbom", "type=provenance,mode=max"]
              output = ["type=oci,dest=app.tar"]
            }
            """])
        let r = try BakeTests().bake(b, ctx, ["app"])
        #expect(r.status == 0, "\(r.stderr)")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:" + ctx + "/app.tar"])
        #expect(raw.stdout.contains("attestation-manifest"), "\(raw.stdout) \(raw.stderr)")
    }

    /// Pushed to a registry and pulled back into another state dir, the attestations come along.
    @Test func attestationsSurvivePushAndPull() throws {
        let b = try BuildFixture()
        let registry = try LocalRegistry(in: b.fs.dir + "/registry")
        defer { registry.stop() }
        let ctx = try b.context(["Dockerfile": "FROM busybox\nRUN echo pushed > /p\n"])
        let ref = "\(registry.host)/att/pushed:1"
        let r = try b.build(["--network", "none", "--attest", "type=provenance", "--attest", "type=sbom", "-t", ref, "--output", "type=registry"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "--tls-verify=false", "docker://" + ref])
        #expect(raw.stdout.contains("attestation-manifest"), "\(raw.stdout) \(raw.stderr)")
        // skopeo copies them with the image (--all): a layout with the attestation manifest and its statements.
        let copied = b.fs.dir + "/copied"
        let copy = try runProcess("/usr/bin/skopeo", ["copy", "--all", "--src-tls-verify=false", "docker://" + ref, "oci:" + copied + ":x"])
        #expect(copy.status == 0, "\(copy.stderr)")
        let layout = try String(contentsOfFile: copied + "/index.json", encoding: .utf8)
        let top = (try JSONSerialization.jsonObject(with: Data(layout.utf8)) as? [String: Any])?["manifests"] as? [[String: Any]]
        let indexDigest = (top?.first?["digest"] as? String ?? "").dropFirst(7)
        let copiedIndex = try String(contentsOfFile: copied + "/blobs/sha256/" + indexDigest, encoding: .utf8)
        #expect(copiedIndex.contains("attestation-manifest"), "\(copiedIndex)")
        let other = b.fs.dir + "/pulled"
        let pull = try rbuild(["pull", "--root", other, ref])
        #expect(pull.status == 0, "\(pull.stderr)")
        let shown = try rbuild(["inspect", "--root", other, "--attestations", ref])
        #expect(shown.stdout.contains("https://spdx.dev/Document") && shown.stdout.contains("linux/amd64"), "\(shown.stdout) \(shown.stderr)")
    }
}
