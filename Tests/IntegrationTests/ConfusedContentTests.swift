import Foundation
import Testing

/// Writes images that are not what they say, each twice: pushed to a registry (through the
/// distribution API, byte for byte: docker-registry only checks that an index's entries exist)
/// as `confused/NAME:1`, and as an OCI layout `OUT/NAME` whose index.json names it `latest`.
/// From the one-platform busybox layout `rbuild save` wrote (argv: layout, registry host, OUT):
/// - `index-is-manifest`: an index whose entry says index, over a manifest;
/// - `manifest-is-index`: an index whose entry says manifest, over an index;
/// - `docker-untyped`: a Docker manifest list whose entry says Docker manifest, over a manifest
///   without its mediaType field; `oci-untyped`: the same manifest under an OCI index (old OCI
///   content: it must still be read);
/// - `deep`: five indexes stacked over the manifest;
/// - `diffids`: a manifest whose config lists two diff_ids for its one layer;
/// - `diffid-value`: a manifest whose config's diff_id is another layer's.
/// Prints the digests it made as JSON.
let confusedShapesScript = #"""
import hashlib, json, os, shutil, sys, urllib.request

src, host, out = sys.argv[1], sys.argv[2], sys.argv[3]
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def srcblob(d): return open(os.path.join(src, "blobs/sha256", d.split(":")[1]), "rb").read()
def req(method, url, data=None, ctype=None):
    r = urllib.request.Request(url, data=data, method=method)
    if ctype: r.add_header("Content-Type", ctype)
    return urllib.request.urlopen(r)

OCI_M, OCI_I = "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"
DOCKER_M, DOCKER_L = "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"
AMD64 = {"architecture": "amd64", "os": "linux"}

class Target:
    """One shape: a repository of the registry and a layout directory, written alike."""
    def __init__(self, name):
        self.repo, self.dir = "confused/" + name, os.path.join(out, name)
        os.makedirs(os.path.join(self.dir, "blobs/sha256"))
        open(os.path.join(self.dir, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    def write(self, data):
        open(os.path.join(self.dir, "blobs/sha256", sha(data).split(":")[1]), "wb").write(data)
    def blob(self, data, mediaType):
        self.write(data)
        loc = req("POST", f"http://{host}/v2/{self.repo}/blobs/uploads/").headers["Location"]
        if loc.startswith("/"): loc = f"http://{host}" + loc
        req("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + sha(data), data, "application/octet-stream")
        return {"mediaType": mediaType, "digest": sha(data), "size": len(data)}
    def doc(self, obj, ctype, typed=True):
        """A manifest or index (children first: the registry checks they exist), by digest."""
        data = json.dumps(dict(obj, mediaType=ctype) if typed else obj, indent=2).encode()
        self.write(data)
        req("PUT", f"http://{host}/v2/{self.repo}/manifests/{sha(data)}", data, ctype)
        return {"mediaType": ctype, "digest": sha(data), "size": len(data)}
    def top(self, d):
        """`d` (written before) tagged 1 in the registry and named latest in the layout."""
        data = open(os.path.join(self.dir, "blobs/sha256", d["digest"].split(":")[1]), "rb").read()
        req("PUT", f"http://{host}/v2/{self.repo}/manifests/1", data, d["mediaType"])
        json.dump({"schemaVersion": 2, "mediaType": OCI_I,
                   "manifests": [dict(d, annotations={"org.opencontainers.image.ref.name": "latest"})]},
                  open(os.path.join(self.dir, "index.json"), "w"))
        return d

index = json.load(open(os.path.join(src, "index.json")))["manifests"][0]
man = json.loads(srcblob(index["digest"]))
config = json.loads(srcblob(man["config"]["digest"]))

def image(t, config=config, typed=True):
    """busybox's manifest in `t` (with `config`); typed: with its mediaType field."""
    layers = [t.blob(srcblob(l["digest"]), l["mediaType"]) for l in man["layers"]]
    c = t.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    return t.doc({"schemaVersion": 2, "config": c, "layers": layers}, OCI_M, typed)

def entry(d, **kw): return dict(d, platform=AMD64, **kw)
made = {}

t = Target("index-is-manifest")
m = image(t)
made["index-is-manifest"] = m["digest"]
t.top(t.doc({"schemaVersion": 2, "manifests": [entry(m, mediaType=OCI_I)]}, OCI_I))

t = Target("manifest-is-index")
inner = t.doc({"schemaVersion": 2, "manifests": [entry(image(t))]}, OCI_I)
made["manifest-is-index"] = inner["digest"]
t.top(t.doc({"schemaVersion": 2, "manifests": [entry(inner, mediaType=OCI_M)]}, OCI_I))

t = Target("docker-untyped")
m = image(t, typed=False)
made["docker-untyped"] = m["digest"]
t.top(t.doc({"schemaVersion": 2, "manifests": [entry(m, mediaType=DOCKER_M)]}, DOCKER_L))

t = Target("oci-untyped")
m = image(t, typed=False)
made["oci-untyped"] = m["digest"]
t.top(t.doc({"schemaVersion": 2, "manifests": [entry(m)]}, OCI_I))

t = Target("deep")
d = entry(image(t))
for _ in range(5):
    d = t.doc({"schemaVersion": 2, "manifests": [d]}, OCI_I)
t.top(d)

t = Target("diffids")
two = dict(config, rootfs=dict(config["rootfs"], diff_ids=config["rootfs"]["diff_ids"] * 2))
made["diffids"] = t.top(image(t, config=two))["digest"]

t = Target("diffid-value")
other = dict(config, rootfs=dict(config["rootfs"], diff_ids=[sha(b"another layer")]))
made["diffid-value"] = t.top(image(t, config=other))["digest"]
made["claimed"] = sha(b"another layer")
made["layer"] = man["layers"][0]["digest"]
print(json.dumps(made))
"""#

/// Issue 16, confused content: each shape above refused by name — exit status below 128, a
/// message naming the digest and what is wrong, nothing named in the store — by `rbuild pull`
/// and a build's FROM from the registry, and by `rbuild load` and `FROM oci-layout://` from the
/// layout; documents over 4 MiB cut off; layers over `--max-layer-size` refused as they unpack.
@Suite("confused content from registries and OCI layouts, as an unprivileged user", .enabled(if: Env.enabled))
struct ConfusedContentTests {
    struct Shapes {
        let b: BuildFixture
        let registry: LocalRegistry
        let out: String
        let digests: [String: String]

        func ref(_ name: String) -> String { "\(registry.host)/confused/\(name):1" }
        func layout(_ name: String) -> String { out + "/" + name }
    }

    func shapes() throws -> Shapes {
        let b = try BuildFixture()
        let out = b.fs.dir + "/shapes"
        let (registry, digests) = try writeShapes(confusedShapesScript, from: b, into: out)
        return Shapes(b: b, registry: registry, out: out, digests: digests)
    }

    /// rbuild's own refusal: a status below 128, one line that contains each of `says`.
    func expectRefused(_ r: Result, _ says: [String], _ comment: String) {
        #expect(r.status > 0 && r.status < 128, "\(comment): status \(r.status): \(r.stderr)")
        for s in says { #expect(r.stderr.contains(s), "\(comment): \(r.stderr)") }
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("PROGRAMMER ERROR"), "\(comment): \(r.stderr)")
    }

    /// The four ways in: `rbuild pull` and FROM from the registry, `rbuild load` and FROM
    /// oci-layout:// from the layout; each refused with `says`, and no image named.
    func expectRefusedEverywhere(_ s: Shapes, _ name: String, _ says: [String]) throws {
        let root = s.b.fs.dir + "/state-" + name
        expectRefused(try rbuild(["pull", "--root", root, s.ref(name)]), says, "pull \(name)")
        expectRefused(try rbuild(["load", "--root", root, s.layout(name), "loaded:1"]), says, "load \(name)")
        for from in [s.ref(name), "oci-layout://" + s.layout(name)] {
            let ctx = try s.b.context(["Dockerfile": "FROM \(from)\nRUN true\n"], name: "ctx-\(name)")
            expectRefused(try rbuild(["build", "--root", root, "--progress", "plain", "-t", "built:1", ctx]), says, "FROM \(from)")
        }
        let images = try rbuild(["images", "--root", root])
        #expect(!images.stdout.contains("confused") && !images.stdout.contains("loaded") && !images.stdout.contains("built"), "\(images.stdout)")
    }

    @Test func aDescriptorAndItsContentOfDifferentKinds() throws {
        let s = try shapes()
        try expectRefusedEverywhere(s, "index-is-manifest", [
            "index \(s.digests["index-is-manifest"] ?? "?")",
            "is a manifest by its mediaType application/vnd.oci.image.manifest.v1+json, but its descriptor says index",
        ])
        try expectRefusedEverywhere(s, "manifest-is-index", [
            "manifest \(s.digests["manifest-is-index"] ?? "?")",
            "is an index by its mediaType application/vnd.oci.image.index.v1+json, but its descriptor says manifest",
        ])
        // The registry's Content-Type is the top document's descriptor: a manifest served as an
        // index is refused too.
        let (proxy, port) = try RegistryTests().proxy("retype", upstream: s.registry.host)
        defer { kill(proxy.processIdentifier, SIGKILL); proxy.waitUntilExit() }
        let pushed = try rbuild(["push"] + s.b.root + ["busybox:latest", "\(s.registry.host)/plain/bb:1"])
        #expect(pushed.status == 0, "\(pushed.stderr)")
        expectRefused(try rbuild(["pull", "--root", s.b.fs.dir + "/retyped", "127.0.0.1:\(port)/plain/bb:1"]),
                      ["of 127.0.0.1:\(port)/plain/bb:1 is a manifest by its mediaType", "but its descriptor says index"], "retyped pull")
    }

    @Test func aManifestWithoutItsMediaType() throws {
        let s = try shapes()
        try expectRefusedEverywhere(s, "docker-untyped", [
            "manifest \(s.digests["docker-untyped"] ?? "?")",
            "has no mediaType field, which a Docker schema 2 manifest must have",
        ])
        // The same bytes under an OCI index: old OCI content, pulled, loaded and run.
        let root = ["--root", s.b.fs.dir + "/untyped"]
        let pull = try rbuild(["pull"] + root + [s.ref("oci-untyped")])
        #expect(pull.status == 0, "\(pull.stderr)")
        let run = try rbuild(["run"] + root + [s.ref("oci-untyped"), "--", "echo", "read"])
        #expect(run.stdout == "read\n", "\(run.stderr)")
        let load = try rbuild(["load"] + root + [s.layout("oci-untyped"), "untyped:1"])
        #expect(load.status == 0, "\(load.stderr)")
    }

    @Test func indexesStackedTooDeep() throws {
        let s = try shapes()
        try expectRefusedEverywhere(s, "deep", ["is nested 5 indexes deep, more than the 4 accepted: refused"])
    }

    @Test func aConfigThatDoesNotMatchItsLayers() throws {
        let s = try shapes()
        // One diff_id too many: refused before any layer is fetched or unpacked.
        try expectRefusedEverywhere(s, "diffids", [
            "manifest \(s.digests["diffids"] ?? "?")", "has 1 layer but its config lists 2 diff_ids: refused",
        ])
        // The right count, another layer's diff_id: refused where the layer is decompressed —
        // load, FROM oci-layout:// (both check before storing) and, for a pulled image, the unpack.
        let says = ["layer \(s.digests["layer"] ?? "?") unpacks to sha256:", "the diff_id its image's config gives: refused"]
        let root = s.b.fs.dir + "/value"
        expectRefused(try rbuild(["load", "--root", root, s.layout("diffid-value"), "loaded:1"]), says, "load")
        let layoutCtx = try s.b.context(["Dockerfile": "FROM oci-layout://\(s.layout("diffid-value"))\nRUN true\n"], name: "value-layout")
        expectRefused(try rbuild(["build", "--root", root, "--progress", "plain", layoutCtx]), says, "FROM oci-layout://")
        let pull = try rbuild(["pull", "--root", root, s.ref("diffid-value")])
        #expect(pull.status == 0, "the count is right: \(pull.stderr)")
        expectRefused(try rbuild(["run", "--root", root, s.ref("diffid-value"), "--", "true"]), says, "run")
        let ctx = try s.b.context(["Dockerfile": "FROM \(s.ref("diffid-value"))\nRUN true\n"], name: "value-registry")
        expectRefused(try rbuild(["build", "--root", root, "--progress", "plain", ctx]), says, "FROM the registry")
        // Nothing of the refused layer was kept under the diff_id it claimed (layers are shared by
        // diff_id: another image naming that diff_id would get it).
        let claimed = String((s.digests["claimed"] ?? "sha256:?").dropFirst(7))
        let leftovers = try runProcess("/usr/bin/find", [root + "/snapshots", "-name", claimed, "-o", "-name", "tmp-*"])
        #expect(leftovers.status == 0 && leftovers.stdout.trimmed.isEmpty, "\(leftovers.stdout)")
    }

    /// A sparse file of `size` bytes.
    func sparse(_ path: String, _ size: Int) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        ftruncate(fd, off_t(size))
        close(fd)
    }

    @Test func aLayoutsDocumentsOverFourMiB() throws {
        let s = try shapes()
        // index.json of 64 MiB: read no further than 4 MiB.
        let big = s.layout("oci-untyped")
        sparse(big + "/index.json", 64 << 20)
        let says = ["\(big): index.json is larger than 4 MiB, the limit for a manifest, index or config: refused (read no further)"]
        expectRefused(try rbuild(["load", "--root", s.b.fs.dir + "/big", big, "big:1"]), says, "load")
        let ctx = try s.b.context(["Dockerfile": "FROM oci-layout://\(big)\n"], name: "big")
        expectRefused(try rbuild(["build", "--root", s.b.fs.dir + "/big", "--progress", "plain", ctx]), says, "FROM oci-layout://")
        // A blob named by digest (FROM oci-layout://DIR@sha256:…) that goes on for 64 MiB.
        let dir = s.layout("deep")
        let digest = "sha256:" + String(repeating: "e", count: 64)
        sparse(dir + "/blobs/sha256/" + String(repeating: "e", count: 64), 64 << 20)
        let byDigest = try s.b.context(["Dockerfile": "FROM oci-layout://\(dir)@\(digest)\n"], name: "by-digest")
        expectRefused(try rbuild(["build", "--root", s.b.fs.dir + "/big", "--progress", "plain", byDigest]),
                      ["\(dir): blob \(digest) is larger than 4 MiB, the limit for a manifest, index or config: refused (read no further)"], "FROM @digest")
    }

    @Test func layersOverTheSizeLimit() throws {
        let s = try shapes()
        let layer = s.digests["layer"] ?? "?"
        let says = ["layer \(layer) unpacks to more than 64 KiB, the limit (--max-layer-size, RBUILD_MAX_LAYER_SIZE): refused"]
        let root = s.b.fs.dir + "/limited"
        #expect(try rbuild(["pull", "--root", root, s.ref("oci-untyped")]).status == 0)
        expectRefused(try rbuild(["run", "--root", root, "--max-layer-size", "64KiB", s.ref("oci-untyped"), "--", "true"]), says, "run")
        var env = ProcessInfo.processInfo.environment
        env["RBUILD_MAX_LAYER_SIZE"] = "64k"
        expectRefused(try rbuild(["run", "--root", root, s.ref("oci-untyped"), "--", "true"], environment: env), says, "run, RBUILD_MAX_LAYER_SIZE")
        let ctx = try s.b.context(["Dockerfile": "FROM \(s.ref("oci-untyped"))\nRUN true\n"], name: "limited")
        expectRefused(try rbuild(["build", "--root", root, "--progress", "plain", "--max-layer-size", "64KiB", ctx]), says, "build")
        expectRefused(try rbuild(["load", "--root", root, "--max-layer-size", "64KiB", s.layout("oci-untyped"), "l:1"]), says, "load")
        expectRefused(try rbuild(["run", "--root", root, "--max-layer-size", "lots", s.ref("oci-untyped"), "--", "true"]),
                      ["--max-layer-size lots: not a size (such as 64GiB, 512m or 1073741824)"], "a bad size")
        // Under the default limit the same image runs.
        let run = try rbuild(["run", "--root", root, s.ref("oci-untyped"), "--", "echo", "fits"])
        #expect(run.stdout == "fits\n", "\(run.stderr)")
    }
}
