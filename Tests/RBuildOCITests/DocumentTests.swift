import Foundation
import Testing
import RBuildSystem
@testable import RBuildOCI

/// Documents in the shapes a confused or hostile source serves, as JSON text.
enum Shapes {
    static let layer = #"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:\#(String(repeating: "a", count: 64))","size":1}"#
    static let config = #"{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\#(String(repeating: "b", count: 64))","size":2}"#
    static let entry = #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\#(String(repeating: "c", count: 64))","size":3}"#

    static func manifest(_ mediaType: String? = MediaType.ociManifest) -> String {
        #"{"schemaVersion":2,\#(mediaType.map { #""mediaType":"\#($0)","# } ?? "")"config":\#(config),"layers":[\#(layer)]}"#
    }

    static func index(_ mediaType: String? = MediaType.ociIndex) -> String {
        #"{"schemaVersion":2,\#(mediaType.map { #""mediaType":"\#($0)","# } ?? "")"manifests":[\#(entry)]}"#
    }
}

struct DocumentTests {
    func descriptor(_ mediaType: String, _ text: String) -> Descriptor {
        Descriptor(mediaType: mediaType, digest: Digest.of(Array(text.utf8)), size: Int64(text.utf8.count))
    }

    struct Refusal: CustomTestStringConvertible, Sendable {
        var name: String
        var descriptorType: String
        var content: String
        var code: OCIError.Code
        var says: String
        var testDescription: String { name }
    }

    static let refusals: [Refusal] = [
        Refusal(name: "an index descriptor, manifest content", descriptorType: MediaType.ociIndex, content: Shapes.manifest(), code: .invalidDocument,
                says: "is a manifest by its mediaType application/vnd.oci.image.manifest.v1+json, but its descriptor says index"),
        Refusal(name: "a manifest descriptor, index content", descriptorType: MediaType.ociManifest, content: Shapes.index(), code: .invalidDocument,
                says: "is an index by its mediaType application/vnd.oci.image.index.v1+json, but its descriptor says manifest"),
        Refusal(name: "a Docker list descriptor, untyped manifest content", descriptorType: MediaType.dockerManifestList, content: Shapes.manifest(nil),
                code: .invalidDocument, says: "is a manifest by its fields (it has no mediaType), but its descriptor says index"),
        Refusal(name: "an OCI manifest descriptor, untyped index content", descriptorType: MediaType.ociManifest, content: Shapes.index(nil),
                code: .invalidDocument, says: "is an index by its fields (it has no mediaType), but its descriptor says manifest"),
        Refusal(name: "a Docker manifest without its mediaType", descriptorType: MediaType.dockerManifest, content: Shapes.manifest(nil),
                code: .invalidDocument, says: "has no mediaType field, which a Docker schema 2 manifest must have"),
        Refusal(name: "a Docker list without its mediaType", descriptorType: MediaType.dockerManifestList, content: Shapes.index(nil),
                code: .invalidDocument, says: "has no mediaType field, which a Docker schema 2 manifest list must have"),
        Refusal(name: "a manifest that says it is an index", descriptorType: MediaType.ociIndex, content: Shapes.manifest(MediaType.ociIndex),
                code: .invalidDocument, says: "says it is an index (application/vnd.oci.image.index.v1+json) but has a manifest's config or layers"),
        Refusal(name: "an index that says it is a manifest", descriptorType: MediaType.ociManifest, content: Shapes.index(MediaType.ociManifest),
                code: .invalidDocument, says: "says it is a manifest (application/vnd.oci.image.manifest.v1+json) but has an index's manifests"),
        Refusal(name: "neither a manifest's nor an index's fields", descriptorType: MediaType.ociManifest, content: #"{"schemaVersion":2,"layers":[]}"#,
                code: .invalidDocument, says: "has no mediaType, and its fields (config or layers, no manifests) do not say whether it is a manifest or an index"),
        Refusal(name: "both kinds' fields", descriptorType: MediaType.ociIndex, content: #"{"schemaVersion":2,"config":\#(Shapes.config),"manifests":[]}"#,
                code: .invalidDocument, says: "do not say whether it is a manifest or an index"),
        Refusal(name: "an unknown mediaType field", descriptorType: MediaType.ociManifest,
                content: #"{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json","config":\#(Shapes.config),"layers":[]}"#,
                code: .invalidDocument, says: "says its mediaType is application/vnd.oci.artifact.manifest.v1+json, which is neither an image manifest nor an index"),
        Refusal(name: "a descriptor that names no document", descriptorType: MediaType.ociLayerGzip, content: Shapes.manifest(),
                code: .invalidDocument, says: "has the media type application/vnd.oci.image.layer.v1.tar+gzip in its descriptor"),
        Refusal(name: "Docker schema 1", descriptorType: MediaType.dockerManifest,
                content: #"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[{"blobSum":"sha256:00"}]}"#,
                code: .invalidDocument, says: "is a Docker schema 1 manifest"),
        Refusal(name: "schemaVersion 3", descriptorType: MediaType.ociManifest, content: #"{"schemaVersion":3,"config":\#(Shapes.config),"layers":[]}"#,
                code: .invalidDocument, says: "has schemaVersion 3, not 2"),
        Refusal(name: "no schemaVersion", descriptorType: MediaType.ociManifest, content: #"{"config":\#(Shapes.config),"layers":[]}"#,
                code: .invalidDocument, says: "has schemaVersion (none), not 2"),
        Refusal(name: "not an object", descriptorType: MediaType.ociManifest, content: "[]", code: .invalidJSON, says: "is not a JSON object with a manifest's or an index's fields"),
        Refusal(name: "over 4 MiB", descriptorType: MediaType.ociManifest,
                content: #"{"schemaVersion":2,"config":\#(Shapes.config),"layers":[],"pad":"\#(String(repeating: "x", count: 4 << 20))"}"#,
                code: .tooLarge, says: "over the 4 MiB limit for a manifest or index: refused"),
    ]

    @Test("confused documents are refused by name", arguments: refusals)
    func refused(_ r: Refusal) {
        let d = descriptor(r.descriptorType, r.content)
        do {
            _ = try Document.decode(Array(r.content.utf8), as: d, from: "example.com/app:1")
            Issue.record("accepted \(r.name)")
        } catch let e as OCIError {
            #expect(e.code == r.code, "\(e.message)")
            #expect(e.message.contains(r.says), "\(e.message)")
            #expect(e.message.contains(d.digest.description), "names the digest: \(e.message)")
            #expect(e.message.contains("example.com/app:1"), "names where it came from: \(e.message)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test("what agrees with its descriptor is read", arguments: [
        (MediaType.ociManifest, Shapes.manifest()),
        (MediaType.dockerManifest, Shapes.manifest(MediaType.dockerManifest)),
        // The same kind, the other flavour: containerd reads it too.
        (MediaType.dockerManifest, Shapes.manifest(MediaType.ociManifest)),
        // OCI content from before image-spec 1.0.2 has no mediaType: its fields say it.
        (MediaType.ociManifest, Shapes.manifest(nil)),
        (MediaType.ociIndex, Shapes.index()),
        (MediaType.dockerManifestList, Shapes.index(MediaType.dockerManifestList)),
        (MediaType.ociIndex, Shapes.index(nil)),
    ])
    func accepted(_ type: String, _ content: String) throws {
        let doc = try Document.decode(Array(content.utf8), as: descriptor(type, content))
        switch doc {
        case .manifest(let m): #expect(MediaType.isManifest(type) && m.layers.count == 1)
        case .index(let i): #expect(MediaType.isIndex(type) && i.manifests.count == 1)
        }
        // Asked for the other kind: refused.
        #expect(throws: OCIError.self) {
            if MediaType.isManifest(type) {
                _ = try decodeIndex(Array(content.utf8), as: descriptor(type, content))
            } else {
                _ = try decodeManifest(Array(content.utf8), as: descriptor(type, content))
            }
        }
    }

    @Test func untypedDocumentsMustSayWhatTheyAre() throws {
        let typed = Array(Shapes.index().utf8)
        #expect(try Document.detectedMediaType(typed, digest: Digest.of(typed)) == MediaType.ociIndex)
        let untyped = Array(Shapes.manifest(nil).utf8)
        #expect {
            _ = try Document.detectedMediaType(untyped, digest: Digest.of(untyped), from: "layout")
        } throws: { e in
            (e as? OCIError)?.message == "document \(Digest.of(untyped)) of layout has no mediaType, and nothing else says whether it is a manifest or an index: refused"
        }
    }

    /// `levels` indexes, each listing the next, the last listing one manifest, in a store.
    func stackedIndexes(_ levels: Int, in store: ContentStore) throws -> Descriptor {
        let m = Array(Shapes.manifest().utf8)
        var d = Descriptor(mediaType: MediaType.ociManifest, digest: try store.put(m), size: Int64(m.count))
        for _ in 0..<levels {
            let bytes = try canonicalJSON(Index(manifests: [d]))
            d = Descriptor(mediaType: MediaType.ociIndex, digest: try store.put(bytes), size: Int64(bytes.count))
        }
        return d
    }

    @Test func indexesStackFourDeepAtMost() throws {
        let tmp = TempDir()
        let store = try ContentStore(root: tmp.path)
        let four = try stackedIndexes(4, in: store)
        let entries = try indexEntries(under: four, read: store.read)
        #expect(entries.count == 4, "three nested indexes and the manifest")
        #expect(MediaType.isManifest(entries.first?.mediaType), "children before the index that lists them")
        let five = try stackedIndexes(5, in: store)
        #expect {
            _ = try indexEntries(under: five, from: "deep:1", read: store.read)
        } throws: { e in
            guard let e = e as? OCIError else { return false }
            return e.code == .tooDeep && e.message.hasPrefix("index sha256:") && e.message.contains(" of deep:1 is nested 5 indexes deep, more than the 4 accepted: refused")
        }
    }

    @Test func anIndexEntryIsCheckedAgainstItsContent() throws {
        let tmp = TempDir()
        let store = try ContentStore(root: tmp.path)
        // The entry says index; the blob is a manifest.
        let m = Array(Shapes.manifest().utf8)
        let lie = Descriptor(mediaType: MediaType.ociIndex, digest: try store.put(m), size: Int64(m.count))
        let top = try canonicalJSON(Index(manifests: [lie]))
        let d = Descriptor(mediaType: MediaType.ociIndex, digest: try store.put(top), size: Int64(top.count))
        #expect {
            _ = try indexEntries(under: d, read: store.read)
        } throws: { e in
            (e as? OCIError)?.message == "index \(lie.digest) is a manifest by its mediaType \(MediaType.ociManifest), but its descriptor says index (\(MediaType.ociIndex)): refused"
        }
    }

    @Test func aConfigListsOneDiffIDPerLayer() throws {
        let config = ImageConfig(created: nil, author: nil, architecture: "amd64", os: "linux", variant: nil, config: nil,
                                 rootfs: ImageConfig.RootFS(diff_ids: [Digest.of([1]), Digest.of([2])]), history: nil)
        try config.checkDiffIDCount(layers: 2, "manifest x")
        #expect {
            try config.checkDiffIDCount(layers: 1, "manifest sha256:abc of app:1")
        } throws: { e in
            (e as? OCIError)?.message == "manifest sha256:abc of app:1 has 1 layer but its config lists 2 diff_ids: refused"
        }
    }
}
