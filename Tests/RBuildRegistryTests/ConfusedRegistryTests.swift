import Foundation
import RBuildOCI
import RBuildRegistry
import RBuildSystem
import Testing

/// Issue 16, confused content from a registry: documents that are not what their descriptor (or
/// the answer's Content-Type) says, no mediaType where it must be, indexes stacked too deep,
/// answers without end, a config that does not match its layers — each refused by name, and
/// nothing of it named in the store.
struct ConfusedRegistryTests {
    let registry: TestRegistry
    let tmp: String
    let store: ImageStore
    let repo = "app"

    init() throws {
        registry = try TestRegistry()
        var t = Array((NSTemporaryDirectory() + "rbuild-registry-XXXXXX").utf8CString)
        tmp = t.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        store = try ImageStore(root: tmp + "/store")
    }

    var ref: String { "\(registry.host)/\(repo):1" }

    /// A config (with `diffIDs` extra diff_ids) and one layer served as blobs; the manifest's
    /// JSON with `mediaType` (none: nil).
    func manifest(_ mediaType: String? = MediaType.ociManifest, extraDiffIDs: Int = 0) throws -> [UInt8] {
        let layer = registry.blob(repo, Array("not really a tar".utf8), MediaType.ociLayerGzip)
        let config = ImageConfig(created: nil, author: nil, architecture: "amd64", os: "linux", variant: nil, config: nil,
                                 rootfs: ImageConfig.RootFS(diff_ids: Array(repeating: layer.digest, count: 1 + extraDiffIDs)), history: nil)
        let c = registry.blob(repo, try canonicalJSON(config), MediaType.ociConfig)
        return try canonicalJSON(Manifest(mediaType: mediaType, config: c, layers: [layer]))
    }

    func pull(_ reference: String? = nil) throws -> Descriptor {
        let r = try Reference(parsing: reference ?? ref)
        let client = try RegistryClient(registry: r, credentials: Credentials(username: "u", password: "p"))
        return try Distribution.pull(r, platforms: [Platform(architecture: "amd64")], store: store, client: client)
    }

    /// The pull fails with a message that contains `message`, and names nothing in the store.
    func expectRefused(_ message: String, _ reference: String? = nil) throws {
        do {
            _ = try pull(reference)
            Issue.record("pulled")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
            #expect(error is OCIError || error is RegistryError, "a typed error: \(type(of: error))")
        }
        #expect(try store.list().isEmpty)
    }

    @Test func anIndexContentTypeOnAManifest() throws {
        let d = registry.document(repo, "1", try manifest(), contentType: MediaType.ociIndex)
        try expectRefused("index \(d.digest) of \(ref) is a manifest by its mediaType \(MediaType.ociManifest), but its descriptor says index")
    }

    @Test func aManifestEntryThatIsAnIndex() throws {
        let inner = registry.document(repo, nil, try manifest(), contentType: MediaType.ociManifest)
        let innerIndex = registry.document(repo, nil, try canonicalJSON(Index(manifests: [inner])), contentType: MediaType.ociIndex)
        var lie = innerIndex
        lie.mediaType = MediaType.ociManifest
        lie.platform = Platform(architecture: "amd64")
        registry.document(repo, "1", try canonicalJSON(Index(manifests: [lie])), contentType: MediaType.ociIndex)
        try expectRefused("manifest \(innerIndex.digest) of \(ref) is an index by its mediaType \(MediaType.ociIndex), but its descriptor says manifest")
    }

    @Test func noMediaType() throws {
        // Typed Docker by the registry: schema 2 must carry it.
        let untyped = try manifest(nil)
        let d = registry.document(repo, "1", untyped, contentType: MediaType.dockerManifest)
        try expectRefused("manifest \(d.digest) of \(ref) has no mediaType field, which a Docker schema 2 manifest must have")
        // Typed by nothing (a Content-Type that is no manifest's): refused too.
        registry.document(repo, "1", untyped, contentType: "application/json")
        try expectRefused("document \(d.digest) of \(registry.host)/\(repo) has no mediaType, and nothing else says whether it is a manifest or an index: refused")
        // Typed OCI, with a manifest's fields: old OCI content, which containerd reads too.
        registry.document(repo, "1", untyped, contentType: MediaType.ociManifest)
        #expect(try pull().digest == d.digest)
    }

    @Test func indexesStackedFiveDeep() throws {
        var d = registry.document(repo, nil, try manifest(), contentType: MediaType.ociManifest)
        d.platform = Platform(architecture: "amd64")
        for level in 1...5 {
            d = registry.document(repo, level == 5 ? "1" : nil, try canonicalJSON(Index(manifests: [d])), contentType: MediaType.ociIndex)
        }
        try expectRefused("is nested 5 indexes deep, more than the 4 accepted: refused")
    }

    @Test func aManifestWithoutEndIsCutOffAtFourMiB() throws {
        registry["/v2/\(repo)/manifests/1"] = TestRegistry.Answer(contentType: MediaType.ociManifest,
                                                                  body: Array(#"{"schemaVersion":2,"pad":""#.utf8), endless: true)
        try expectRefused("manifest \(repo):1 from \(registry.host) is larger than 4 MiB, the limit for a manifest or index: refused (stopped reading at ")
        // What the kernel's socket buffers hold besides; not the 64 MiB a reader to the end takes.
        #expect(registry.sentEndless < 32 << 20, "\(registry.sentEndless) bytes sent")
    }

    @Test func anErrorPageWithoutEndIsCutOff() throws {
        registry["/v2/\(repo)/manifests/1"] = TestRegistry.Answer(status: 404, contentType: "text/html", body: Array("<html>".utf8), endless: true)
        try expectRefused("/v2/\(repo)/manifests/1: the answer is larger than 4 MiB: refused (stopped reading there)")
        #expect(registry.sentEndless < 32 << 20, "\(registry.sentEndless) bytes sent")
    }

    @Test func aDescriptorOverFourMiBIsNotFetched() throws {
        var big = registry.document(repo, nil, try manifest(), contentType: MediaType.ociManifest)
        big.size = 5 << 20
        big.platform = Platform(architecture: "amd64")
        registry.document(repo, "1", try canonicalJSON(Index(manifests: [big])), contentType: MediaType.ociIndex)
        try expectRefused("\(ref): the descriptor of \(big.digest) says 5242880 bytes, over the 4 MiB limit for a manifest or index: refused")
        #expect(!registry.requests.contains("/v2/\(repo)/manifests/\(big.digest)"))
    }

    @Test func aConfigWithADiffIDTooManyIsRefusedBeforeTheLayers() throws {
        let bytes = try manifest(extraDiffIDs: 1)
        let d = registry.document(repo, "1", bytes, contentType: MediaType.ociManifest)
        try expectRefused("manifest \(d.digest) of \(ref) has 1 layer but its config lists 2 diff_ids: refused")
        let layer = try decodeJSON(Manifest.self, from: bytes, what: "m").layers[0]
        #expect(!registry.requests.contains("/v2/\(repo)/blobs/\(layer.digest)"), "\(registry.requests)")
    }
}
