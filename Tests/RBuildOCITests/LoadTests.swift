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

    /// `..` as the kernel sees it: a `/` and a combining mark after it are one Character, and the
    /// names were split on Characters (found while fixing the same split in .dockerignore).
    @Test(arguments: ["../\u{301}x", "a/../\u{301}x", "/..", "./../x", "..", "x/.."])
    func dotDotIsRefusedWhateverFollows(_ name: String) {
        #expect { try safeEntryName(name, archive: "t") } throws: { ($0 as? OCIError)?.code == .unsafeEntry }
    }

    @Test(arguments: [("./a//b/", "a/b"), ("/\u{301}x/y", "\u{301}x/y"), ("..\u{301}/x", "..\u{301}/x"), (".\u{301}", ".\u{301}")])
    func entryNamesAreMadeRelative(_ raw: String, _ name: String) throws {
        #expect(try safeEntryName(raw, archive: "t").utf8.elementsEqual(name.utf8))
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

/// Issue 16, confused content: a layout or archive whose documents are not what their
/// descriptors say, nest too deep, are too large, or whose config does not match its layers, is
/// refused by name and leaves nothing in the store.
struct ConfusedLayoutTests {
    let state: TempDir
    let dir: String
    let index: Index
    let manifest: Manifest

    /// A saved one-platform image as a layout directory.
    init() throws {
        let (state, store, _) = try LoadTests().saved()
        self.state = state
        dir = state.path + "/layout"
        try store.save("demo:1", platform: nil, to: .ociLayout(dir))
        (index, manifest) = try layoutManifest(dir)
    }

    /// Writes a blob into the layout; returns its descriptor.
    @discardableResult
    func blob(_ bytes: [UInt8], _ mediaType: String) throws -> Descriptor {
        let d = Digest.of(bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/blobs/sha256/" + d.hex))
        return Descriptor(mediaType: mediaType, digest: d, size: Int64(bytes.count))
    }

    /// index.json listing only `entry` (named `latest`).
    func top(_ entry: Descriptor) throws {
        var e = entry
        e.annotations = ["org.opencontainers.image.ref.name": "latest"]
        try Data(try canonicalJSON(Index(manifests: [e]))).write(to: URL(fileURLWithPath: dir + "/index.json"))
    }

    var manifestDescriptor: Descriptor { index.manifests[0] }

    func expectRejected(_ message: String, path: String? = nil) throws {
        try LoadTests().expectRejected(path ?? dir, message, into: state)
    }

    @Test func anIndexEntryNamingAManifest() throws {
        var lie = manifestDescriptor
        lie.mediaType = MediaType.ociIndex
        try top(lie)
        try expectRejected("index \(lie.digest) of \(dir) is a manifest by its mediaType \(MediaType.ociManifest), but its descriptor says index")
    }

    @Test func aManifestEntryNamingAnIndex() throws {
        let inner = try blob(try canonicalJSON(Index(manifests: [manifestDescriptor])), MediaType.ociIndex)
        var lie = inner
        lie.mediaType = MediaType.dockerManifest
        try top(lie)
        try expectRejected("manifest \(inner.digest) of \(dir) is an index by its mediaType \(MediaType.ociIndex), but its descriptor says manifest")
    }

    @Test func aDockerManifestWithoutItsMediaType() throws {
        var m = manifest
        m.mediaType = nil
        let d = try blob(try canonicalJSON(m), MediaType.dockerManifest)
        try top(d)
        try expectRejected("manifest \(d.digest) of \(dir) has no mediaType field, which a Docker schema 2 manifest must have")
        // The same document typed OCI by its descriptor is old OCI content, and loads.
        try top(Descriptor(mediaType: MediaType.ociManifest, digest: d.digest, size: d.size))
        let other = try ImageStore(root: state.path + "/accepted")
        #expect(try other.load(path: dir).descriptor.digest == d.digest)
    }

    @Test func aDigestThatNothingTypes() throws {
        var m = manifest
        m.mediaType = nil
        let d = try blob(try canonicalJSON(m), MediaType.ociManifest)
        let other = try ImageStore(root: state.path + "/other")
        #expect {
            _ = try other.ingest(path: dir, digest: d.digest)
        } throws: { e in
            (e as? OCIError)?.message == "document \(d.digest) of \(dir) has no mediaType, and nothing else says whether it is a manifest or an index: refused"
        }
        #expect(other.content.allBlobs().isEmpty)
    }

    @Test func indexesNestedFiveDeep() throws {
        var d = manifestDescriptor
        for _ in 0..<5 { d = try blob(try canonicalJSON(Index(manifests: [d])), MediaType.ociIndex) }
        try top(d)
        try expectRejected("is nested 5 indexes deep, more than the 4 accepted: refused")
    }

    func withConfig(_ change: (inout ImageConfig) -> Void) throws {
        let bytes = [UInt8](FileManager.default.contents(atPath: dir + "/blobs/sha256/" + manifest.config.digest.hex)!)
        var config = try decodeJSON(ImageConfig.self, from: bytes, what: "config")
        change(&config)
        var m = manifest
        m.config = try blob(try canonicalJSON(config), MediaType.ociConfig)
        try top(try blob(try canonicalJSON(m), MediaType.ociManifest))
    }

    @Test func oneDiffIDTooMany() throws {
        try withConfig { $0.rootfs.diff_ids.append(Digest.of([1])) }
        try expectRejected("has 1 layer but its config lists 2 diff_ids: refused")
    }

    @Test func aDiffIDOfAnotherLayer() throws {
        let other = Digest.of([1])
        try withConfig { $0.rootfs.diff_ids = [other] }
        try expectRejected("layer \(manifest.layers[0].digest) unpacks to sha256:")
        try expectRejected(", not to \(other), the diff_id its image's config gives: refused")
    }

    @Test func aLayerOverTheSizeLimit() throws {
        let other = try ImageStore(root: state.path + "/other")
        #expect {
            _ = try other.load(path: dir, maxLayerSize: 4096)
        } throws: { e in
            (e as? OCIError)?.message == "layer \(manifest.layers[0].digest) unpacks to more than 4 KiB, the limit (--max-layer-size, RBUILD_MAX_LAYER_SIZE): refused"
        }
        #expect(other.content.allBlobs().isEmpty)
    }

    /// A sparse file of `size` bytes (zeros: cheap to make, and to read for as long as a reader
    /// keeps reading).
    func sparse(_ path: String, _ size: Int) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        ftruncate(fd, off_t(size))
        close(fd)
    }

    @Test func anIndexJSONOverFourMiB() throws {
        sparse(dir + "/index.json", 64 << 20)
        try expectRejected("\(dir): index.json is larger than 4 MiB, the limit for a manifest, index or config: refused (read no further)")
    }

    @Test func aBlobOverFourMiBNamedByDigest() throws {
        // Named by digest and not listed in index.json, its size is unknown until it is read:
        // reading stops at the limit (a 64 MiB file is not copied into the staging area first).
        let digest = Digest.of([2])
        sparse(dir + "/blobs/sha256/" + digest.hex, 64 << 20)
        let other = try ImageStore(root: state.path + "/other")
        #expect {
            _ = try other.ingest(path: dir, digest: digest)
        } throws: { e in
            (e as? OCIError)?.message == "\(dir): blob \(digest) is larger than 4 MiB, the limit for a manifest, index or config: refused (read no further)"
        }
    }

    /// A FIFO planted where a layer blob belongs: refused at once, not read (which would block
    /// for ever); a directory there the same.
    @Test(.timeLimit(.minutes(1)))
    func aFIFOOrDirectoryAsABlob() throws {
        let path = dir + "/blobs/sha256/" + manifest.layers[0].digest.hex
        unlink(path)
        #expect(mkfifo(path, 0o644) == 0)
        try expectRejected("\(dir): blob \(manifest.layers[0].digest) is not a regular file (a FIFO, device, socket or directory): refused")
        unlink(path)
        #expect(mkdir(path, 0o755) == 0)
        try expectRejected("\(dir): blob \(manifest.layers[0].digest) is not a regular file (a FIFO, device, socket or directory): refused")
    }

    @Test func aDescriptorThatSaysOverFourMiB() throws {
        var big = manifestDescriptor
        big.size = 5 << 20
        try top(big)
        try expectRejected("\(dir): the descriptor of \(big.digest) says 5242880 bytes, over the 4 MiB limit for a manifest, index or config: refused")
    }

    @Test func anArchivesIndexJSONOverFourMiB() throws {
        // A tar whose index.json member is 5 MiB: refused as it is read.
        let tar = state.path + "/big.tar"
        let (s, out) = try run("/usr/bin/python3", ["-c", """
            import io, sys, tarfile
            with tarfile.open(sys.argv[1], "w") as t:
                data = b"{" + b" " * (5 << 20) + b"}"
                i = tarfile.TarInfo("index.json"); i.size = len(data); t.addfile(i, io.BytesIO(data))
            """, tar])
        #expect(s == 0, "\(out)")
        try expectRejected("\(tar): index.json is larger than 4 MiB, the limit for a manifest, index or config: refused (read no further)", path: tar)
    }
}
