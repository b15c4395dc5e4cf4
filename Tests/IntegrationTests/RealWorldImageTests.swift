import Foundation
import Testing

/// Writes the shapes registries and buildx really serve, from the two-platform busybox layout
/// that `rbuild save` wrote (argv: layout dir, registry host, output layout dir):
/// - `shapes/oci:1`: an OCI index listing amd64, `arm64/v8` and an attestation manifest per
///   platform (unknown/unknown, in-toto layers, `vnd.docker.reference.*` annotations), as
///   `docker buildx build --provenance` pushes it;
/// - `shapes/docker:1`: a Docker schema-2 manifest list of schema-2 manifests with gzip layers
///   and `arm64/v8`, as Docker Hub's official images are;
/// - `shapes/nested:1`: an index nesting an index, whose entries name no platform (the config
///   says it);
/// - a layout with several names (`latest-amd64` first, then `latest` → the index,
///   `latest-arm64`), as `-o type=oci` of several tags leaves one.
/// Blobs and manifests go up through the distribution API directly, byte for byte.
let registryShapesScript = #"""
import gzip, hashlib, json, os, shutil, sys, urllib.request

src, host, out = sys.argv[1], sys.argv[2], sys.argv[3]
def blob(d): return open(os.path.join(src, "blobs/sha256", d.split(":")[1]), "rb").read()
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def req(method, url, data=None, ctype=None):
    r = urllib.request.Request(url, data=data, method=method)
    if ctype: r.add_header("Content-Type", ctype)
    return urllib.request.urlopen(r)
def put_blob(repo, data):
    d = sha(data)
    loc = req("POST", f"http://{host}/v2/{repo}/blobs/uploads/").headers["Location"]
    if loc.startswith("/"): loc = f"http://{host}" + loc
    req("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + d, data, "application/octet-stream")
    return d
def put_manifest(repo, ref, doc):
    data = json.dumps(doc, indent=3).encode()    # not rbuild's canonical form, on purpose
    req("PUT", f"http://{host}/v2/{repo}/manifests/{ref}", data, doc["mediaType"])
    return {"mediaType": doc["mediaType"], "digest": sha(data), "size": len(data)}

top = json.load(open(os.path.join(src, "index.json")))["manifests"][0]
index = json.loads(blob(top["digest"]))
images = {}
for m in index["manifests"]:
    man = json.loads(blob(m["digest"]))
    cfg = json.loads(blob(man["config"]["digest"]))
    images[cfg["architecture"]] = (m, man)

def copy_image(repo, arch, docker=False):
    m, man = images[arch]
    cfg = blob(man["config"]["digest"])
    layers = []
    for l in man["layers"]:
        data = blob(l["digest"])
        if docker and data[:2] != b"\x1f\x8b":
            data = gzip.compress(data, mtime=0)
        layers.append({"mediaType": ("application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else l["mediaType"]),
                       "digest": put_blob(repo, data), "size": len(data)})
    doc = {"schemaVersion": 2,
           "mediaType": "application/vnd.docker.distribution.manifest.v2+json" if docker else "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json" if docker else "application/vnd.oci.image.config.v1+json",
                      "digest": put_blob(repo, cfg), "size": len(cfg)},
           "layers": layers}
    return put_manifest(repo, sha(json.dumps(doc, indent=3).encode()), doc)

def attestation(repo, subject):
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                            "subject": [{"name": "_", "digest": {"sha256": subject["digest"].split(":")[1]}}], "predicate": {}}).encode()
    layer = put_blob(repo, statement)
    cfg = json.dumps({"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put_blob(repo, cfg), "size": len(cfg)},
           "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": layer, "size": len(statement),
                       "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]}
    d = put_manifest(repo, sha(json.dumps(doc, indent=3).encode()), doc)
    d["platform"] = {"architecture": "unknown", "os": "unknown"}
    d["annotations"] = {"vnd.docker.reference.digest": subject["digest"], "vnd.docker.reference.type": "attestation-manifest"}
    return d

plat = {"amd64": {"architecture": "amd64", "os": "linux"}, "arm64": {"architecture": "arm64", "os": "linux", "variant": "v8"}}

# An OCI index with attestations, as buildx pushes it.
entries, atts = [], []
for arch in ("amd64", "arm64"):
    d = copy_image("shapes/oci", arch); d["platform"] = plat[arch]
    entries.append(d); atts.append(attestation("shapes/oci", d))
oci_arm64 = entries[1]["digest"]
oci_index = put_manifest("shapes/oci", "1", {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                            "manifests": entries + atts})

# A Docker manifest list.
entries = []
for arch in ("amd64", "arm64"):
    d = copy_image("shapes/docker", arch, docker=True); d["platform"] = plat[arch]; entries.append(d)
put_manifest("shapes/docker", "1", {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                                    "manifests": entries})

# Nested, no platforms.
amd, arm = copy_image("shapes/nested", "amd64"), copy_image("shapes/nested", "arm64")
inner = put_manifest("shapes/nested", "inner", {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm]})
put_manifest("shapes/nested", "1", {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [amd, inner]})

# A layout with several names: the source layout's blobs, a v8 index, names in an awkward order.
shutil.copytree(src, out)
def write(doc):
    data = json.dumps(doc).encode()
    open(os.path.join(out, "blobs/sha256", sha(data).split(":")[1]), "wb").write(data)
    return {"mediaType": doc["mediaType"], "digest": sha(data), "size": len(data)}
named = lambda d, tag: dict(d, annotations={"org.opencontainers.image.ref.name": tag})
per = {arch: dict(images[arch][0], platform=plat[arch]) for arch in images}
idx = write({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [per["amd64"], per["arm64"]]})
json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": [named(per["amd64"], "latest-amd64"), named(idx, "latest"), named(per["arm64"], "latest-arm64")]},
          open(os.path.join(out, "index.json"), "w"))
print(json.dumps({"oci": oci_index["digest"], "oci-arm64": oci_arm64, "arm64": images["arm64"][0]["digest"], "amd64": images["amd64"][0]["digest"]}))
"""#

/// `b`'s busybox:latest saved as an OCI layout, a docker-registry of its own, and `script` (one
/// of the shape writers above) run as `python3 -c script LAYOUT REGISTRY-HOST OUT`: the registry,
/// and the digests the script printed as a JSON object.
func writeShapes(_ script: String, from b: BuildFixture, into out: String) throws -> (LocalRegistry, [String: String]) {
    let src = b.fs.dir + "/layout"
    let save = try rbuild(["save"] + b.root + ["-o", "type=oci,tar=false,dest=\(src)", "busybox:latest"])
    guard save.status == 0 else { throw FixtureError(message: "save: \(save.stderr)") }
    let registry = try LocalRegistry(in: b.fs.dir + "/registry")
    let r = try runProcess("/usr/bin/python3", ["-c", script, src, registry.host, out])
    guard r.status == 0 else { throw FixtureError(message: "writing the shapes: \(r.stderr)") }
    return (registry, try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: String] ?? [:])
}

/// Issue 13: images in the shapes the world serves, pulled and built from as an unprivileged user.
@Suite("real-world image shapes: variants, attestations, Docker lists, nested indexes, layouts with several names",
       .enabled(if: Env.enabled))
struct RealWorldImageTests {
    struct Shapes {
        let b: BuildFixture
        let registry: LocalRegistry
        let layout: String
        let digests: [String: String]
    }

    func shapes() throws -> Shapes {
        let b = try MultiPlatformBuildTests().fixture()
        let layout = b.fs.dir + "/names"
        let (registry, digests) = try writeShapes(registryShapesScript, from: b, into: layout)
        return Shapes(b: b, registry: registry, layout: layout, digests: digests)
    }

    /// `uname -m` in `image` for `platform`, or the error.
    func run(_ s: Shapes, _ root: String, _ platform: String, _ image: String) throws -> String {
        let r = try rbuild(["run", "--root", root, "--platform", platform, image, "--", "uname", "-m"])
        return r.status == 0 ? r.stdout : "exit \(r.status): \(r.stderr)"
    }

    @Test func ociIndexWithVariantAndAttestations() throws {
        let s = try shapes()
        let ref = "\(s.registry.host)/shapes/oci:1"
        // One platform: `arm64` finds `arm64/v8`, and runs.
        let one = s.b.fs.dir + "/one"
        let pull = try rbuild(["pull", "--root", one, "--platform", "linux/arm64", ref])
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stdout.contains(s.digests["oci-arm64"] ?? "?"), "\(pull.stdout)")
        #expect(try run(s, one, "linux/arm64", ref) == "aarch64\n")
        // Asking for the attestations' platform is an error that lists only runnable platforms.
        let none = try rbuild(["pull", "--root", one, "--platform", "linux/riscv64", ref])
        #expect(none.status != 0 && none.status < 128)
        #expect(none.stderr.contains("it has: linux/amd64, linux/arm64/v8)") && !none.stderr.contains("unknown"), "\(none.stderr)")
        // Every platform: the registry's index is kept whole (attestations too), lists two
        // platforms, and pushes back byte for byte.
        let all = s.b.fs.dir + "/all"
        let whole = try rbuild(["pull", "--root", all, "--platform", "linux/amd64,linux/arm64", ref])
        #expect(whole.status == 0, "\(whole.stderr)")
        #expect(whole.stdout.contains(s.digests["oci"] ?? "?"), "\(whole.stdout)")
        let images = try rbuild(["images", "--root", all])
        #expect(images.stdout.contains("linux/amd64,linux/arm64/v8") && !images.stdout.contains("unknown"), "\(images.stdout)")
        let copy = "\(s.registry.host)/shapes/copy:1"
        let push = try rbuild(["push", "--root", all, ref, copy])
        #expect(push.status == 0, "\(push.stderr)")
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://" + copy])
        #expect(raw.stdout.contains("attestation-manifest"), "\(raw.stdout)")
        let digest = try runProcess("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://" + copy])
        #expect(digest.stdout.trimmed == s.digests["oci"], "the copy is the same index")
        // A two-platform build FROM it: the v8 variant counts as arm64.
        let ctx = try s.b.context(["Dockerfile": "FROM \(ref)\nRUN uname -m > /m\n"], name: "from-oci")
        let out = s.b.fs.dir + "/out-oci"
        let build = try rbuild(["build", "--root", s.b.fs.dir + "/three", "--platform", "linux/amd64,linux/arm64",
                                "-o", "type=local,dest=\(out)", ctx])
        #expect(build.status == 0, "\(build.stderr)")
        #expect(try s.b.file(out + "/linux_arm64/m") == "aarch64\n")
        #expect(try s.b.file(out + "/linux_amd64/m") == "x86_64\n")
    }

    @Test func dockerManifestListAndNestedIndex() throws {
        let s = try shapes()
        let list = "\(s.registry.host)/shapes/docker:1"
        let ctx = try s.b.context(["Dockerfile": "FROM \(list)\nRUN uname -m > /m\n"], name: "from-docker")
        let out = s.b.fs.dir + "/out"
        let build = try rbuild(["build", "--root", s.b.fs.dir + "/d", "--platform", "linux/amd64,linux/arm64",
                                "-o", "type=oci,dest=\(out).tar", ctx])
        #expect(build.status == 0, "\(build.stderr)")
        // The result is an index of both platforms, readable by skopeo.
        let raw = try runProcess("/usr/bin/skopeo", ["inspect", "--raw", "oci-archive:\(out).tar"])
        #expect(raw.status == 0 && raw.stdout.contains("\"arm64\"") && raw.stdout.contains("\"amd64\""), "\(raw.stdout) \(raw.stderr)")
        #expect(try run(s, s.b.fs.dir + "/d", "linux/arm64", list) == "aarch64\n")
        // Nested index, entries without a platform: the config says which is which.
        let nested = "\(s.registry.host)/shapes/nested:1"
        let n = s.b.fs.dir + "/n"
        let pull = try rbuild(["pull", "--root", n, "--platform", "linux/arm64", nested])
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(try run(s, n, "linux/arm64", nested) == "aarch64\n")
        // A second platform pulled later joins the first under the name.
        #expect(try rbuild(["pull", "--root", n, "--platform", "linux/amd64", nested]).status == 0)
        #expect(try run(s, n, "linux/arm64", nested) == "aarch64\n")
        let amd = try run(s, n, "linux/amd64", nested)
        #expect(amd == "x86_64\n", "\(amd)")
    }

    @Test func layoutWithSeveralNames() throws {
        let s = try shapes()
        let ctx = try s.b.context(["Dockerfile": "FROM base\nRUN uname -m > /m\n"], name: "from-layout")
        func build(_ spec: String, _ platform: String) throws -> String {
            let out = s.b.fs.dir + "/o-\(UUID().uuidString)"
            let r = try rbuild(["build", "--root", s.b.fs.dir + "/l", "--platform", platform, "--build-context", "base=oci-layout://" + spec,
                                "-o", "type=local,dest=\(out)", ctx])
            #expect(r.status == 0, "\(spec) \(platform): \(r.stderr)")
            return (try? s.b.file(out + "/m")) ?? ""
        }
        // No tag: `latest` (the index), not the first entry (latest-amd64).
        #expect(try build(s.layout, "linux/arm64") == "aarch64\n")
        #expect(try build(s.layout, "linux/amd64") == "x86_64\n")
        #expect(try build(s.layout + ":latest", "linux/arm64") == "aarch64\n")
        #expect(try build(s.layout + "@" + (s.digests["arm64"] ?? "?"), "linux/arm64") == "aarch64\n")
        // A tag that names one platform only: asking for another is a clear error.
        let out = s.b.fs.dir + "/o-bad"
        let bad = try rbuild(["build", "--root", s.b.fs.dir + "/l", "--platform", "linux/arm64", "--build-context",
                              "base=oci-layout://\(s.layout):latest-amd64", "-o", "type=local,dest=\(out)", ctx])
        #expect(bad.status != 0 && bad.status < 128)
        #expect(bad.stderr.contains("linux/arm64") && bad.stderr.contains("linux/amd64"), "\(bad.stderr)")
    }
}

/// Issue 13: trees a RUN step leaves that the invoking user cannot read (mode 000, or 0700 under
/// a subordinate id as apt's `_apt` partial directory) are diffed, copied with `COPY --from`
/// and exported all the same, on every snapshotter.
@Suite("unreadable trees left by RUN steps, as an unprivileged user", .enabled(if: Env.enabled))
struct UnreadableTreeTests {
    @Test(arguments: ["overlay", "fuse-overlayfs", "copy"])
    func diffCopyAndExport(snapshotter: String) throws {
        let b = try BuildFixture()
        // Only a user with a range has ids other than 0 inside.
        let foreign = Env.hasRange
            ? "mkdir -p /p/apt/partial && echo part > /p/apt/partial/f && chown -R 42:42 /p/apt/partial && chmod 700 /p/apt/partial && chmod 600 /p/apt/partial/f"
            : "true"
        let ctx = try b.context(["Dockerfile": """
            FROM busybox AS a
            RUN mkdir -p /p/d && echo secret > /p/d/f && chmod 000 /p/d/f /p/d
            RUN \(foreign)
            FROM busybox
            COPY --from=a /p /p
            RUN cat /p/d/f \(Env.hasRange ? "/p/apt/partial/f" : "") > /read
            """])
        let out = b.fs.dir + "/out"
        defer { _ = try? runProcess("/bin/chmod", ["-R", "u+rwX", out]) }
        let r = try b.build(["--snapshotter", snapshotter, "-o", "type=local,dest=\(out)/local", "-o", "type=tar,dest=\(out)/fs.tar"], ctx)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try b.file(out + "/local/read") == (Env.hasRange ? "secret\npart\n" : "secret\n"))
        var st = stat()
        #expect(stat(out + "/local/p/d", &st) == 0 && st.st_mode & 0o777 == 0, "the mode travels to type=local")
        let list = try runProcess("/bin/tar", ["-tvf", out + "/fs.tar", "--numeric-owner"]).stdout
        #expect(list.contains("d--------- 0/0") && list.contains("---------- 0/0"), "\(list)")
        if Env.hasRange {
            #expect(list.contains("drwx------ 42/42") && list.contains("-rw------- 42/42"), "\(list)")
        }
    }
}
