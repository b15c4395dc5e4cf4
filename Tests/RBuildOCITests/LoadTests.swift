import Foundation
import Testing
import RBuildSystem
@testable import RBuildOCI

/// The index and first manifest of an OCI layout directory.
func layoutManifest(_ dir: String) throws -> (Index, Manifest) {
    let index = try decodeJSON(Index.self, from: [UInt8](FileManager.default.contents(atPath: dir + "/index.json")!), what: "index")
    let m = try decodeJSON(Manifest.self, from: [UInt8](FileManager.default.contents(atPath: dir + "/blobs/sha256/" + index.manifests[0].digest.hex)!), what: "manifest")
    return (index, m)
}

struct LoadTests {
    /// A saved single-platform image in a fresh store.
    func saved() throws -> (TempDir, ImageStore, Descriptor) {
        let tree = TempDir(), state = TempDir()
        try makeTree(tree.path)
        let store = try ImageStore(root: state.path + "/store")
        let m = try importDirectory(tree.path, platform: Platform(architecture: "amd64"), store: store)
        _ = try store.add(platformManifest: m, as: "demo:1")
        return (state, store, m)
    }

    @Test(arguments: ["layout", "oci", "docker"])
    func roundTrip(_ kind: String) throws {
        let (state, store, m) = try saved()
        let target: ExportTarget = kind == "layout" ? .ociLayout(state.path + "/out") : kind == "oci" ? .ociArchive(state.path + "/out.tar") : .dockerArchive(state.path + "/out.tar")
        try store.save("demo:1", platform: nil, to: target)
        let other = try ImageStore(root: state.path + "/other")
        let path = kind == "layout" ? state.path + "/out" : state.path + "/out.tar"
        let (name, d) = try other.load(path: path)
        #expect(name == "demo:1")
        #expect(d.digest == m.digest)
        #expect(try FileManager.default.contentsOfDirectory(atPath: state.path + "/other/ingest").isEmpty)
    }

    @Test func loadsWhatSkopeoWrote() throws {
        let (state, store, m) = try saved()
        try store.save("demo:1", platform: nil, to: .ociLayout(state.path + "/layout"))
        let (s, out) = try run("/usr/bin/skopeo", ["copy", "--quiet", "oci:\(state.path)/layout:1", "docker-archive:\(state.path)/sk.tar:example/app:7"])
        #expect(s == 0, "\(out)")
        let other = try ImageStore(root: state.path + "/other")
        let (name, d) = try other.load(path: state.path + "/sk.tar")
        #expect(name == "docker.io/example/app:7")
        // skopeo stores the layer uncompressed in a docker archive: the diffIDs must still agree.
        let (_, manifest) = try other.manifest(of: d, platform: nil)
        let (_, original) = try store.manifest(of: m, platform: nil)
        let config = try decodeJSON(ImageConfig.self, from: try other.content.read(manifest.config.digest), what: "c")
        let originalConfig = try decodeJSON(ImageConfig.self, from: try store.content.read(original.config.digest), what: "c")
        #expect(config.rootfs.diff_ids == originalConfig.rootfs.diff_ids)
        #expect(manifest.layers[0].mediaType == MediaType.ociLayer)
        #expect(try other.lookup("example/app:7") != nil)
    }

    /// Nothing of a rejected archive reaches the store.
    func expectRejected(_ path: String, _ message: String, into state: TempDir) throws {
        let other = try ImageStore(root: state.path + "/other")
        do {
            _ = try other.load(path: path)
            Issue.record("loaded \(path)")
        } catch let e as OCIError {
            #expect(e.message.contains(message), "\(e.message)")
        }
        #expect(other.content.allBlobs().isEmpty)
        #expect(try other.list().isEmpty)
    }

    @Test func dotDotNamesAreRefused() throws {
        let (state, _, _) = try saved()
        let evil = state.path + "/evil"
        try FileManager.default.createDirectory(atPath: evil + "/a", withIntermediateDirectories: true)
        try "x".write(toFile: evil + "/escape", atomically: false, encoding: .utf8)
        let (s, out) = try run("/bin/tar", ["-C", evil + "/a", "-cf", state.path + "/evil.tar", "-P", "../escape"])
        #expect(s == 0, "\(out)")
        try expectRejected(state.path + "/evil.tar", "unsafe entry \"../escape\"", into: state)
        #expect {
            _ = try importTarball(state.path + "/evil.tar", platform: Platform(architecture: "amd64"), store: ImageStore(root: state.path + "/third"))
        } throws: { ($0 as? OCIError)?.code == .unsafeEntry }
    }

    @Test func aTruncatedGzipLayerIsFound() throws {
        let (state, store, _) = try saved()
        let dir = state.path + "/layout"
        try store.save("demo:1", platform: nil, to: .ociLayout(dir))
        // Cut the layer short and re-point the manifest at the cut blob, so that only the
        // decompression can tell.
        var (index, manifest) = try layoutManifest(dir)
        let layer = [UInt8](FileManager.default.contents(atPath: dir + "/blobs/sha256/" + manifest.layers[0].digest.hex)!)
        let cut = Array(layer.prefix(layer.count / 2))
        let cutDigest = Digest.of(cut)
        try Data(cut).write(to: URL(fileURLWithPath: dir + "/blobs/sha256/" + cutDigest.hex))
        manifest.layers[0].digest = cutDigest
        manifest.layers[0].size = Int64(cut.count)
        let mbytes = try canonicalJSON(manifest)
        let md = Digest.of(mbytes)
        try Data(mbytes).write(to: URL(fileURLWithPath: dir + "/blobs/sha256/" + md.hex))
        var entry = index.manifests[0]
        entry.digest = md
        entry.size = Int64(mbytes.count)
        try Data(try canonicalJSON(Index(manifests: [entry]))).write(to: URL(fileURLWithPath: dir + "/index.json"))
        try expectRejected(dir, "is truncated", into: state)
    }

    @Test func anIndexPointingAtAMissingBlob() throws {
        let (state, store, _) = try saved()
        let dir = state.path + "/layout"
        try store.save("demo:1", platform: nil, to: .ociLayout(dir))
        let (_, manifest) = try layoutManifest(dir)
        unlink(dir + "/blobs/sha256/" + manifest.layers[0].digest.hex)
        try expectRejected(dir, "refers to blob \(manifest.layers[0].digest), which it does not contain", into: state)
    }

    @Test func aFlippedByteInALayoutBlob() throws {
        let (state, store, _) = try saved()
        let dir = state.path + "/layout"
        try store.save("demo:1", platform: nil, to: .ociLayout(dir))
        let (_, manifest) = try layoutManifest(dir)
        let path = dir + "/blobs/sha256/" + manifest.layers[0].digest.hex
        // The export hard-linked the store's blob: copy it before damaging it.
        let bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        unlink(path)
        var damaged = bytes
        damaged[damaged.count / 2] ^= 0xff
        try Data(damaged).write(to: URL(fileURLWithPath: path))
        try expectRejected(dir, "blob \(manifest.layers[0].digest) is corrupt: expected \(manifest.layers[0].digest), got sha256:", into: state)
        try store.content.verify(manifest.layers[0].digest)
    }
}
