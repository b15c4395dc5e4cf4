import Foundation
import RBuildExporters
import RBuildOCI
import RBuildSystem
import RBuildSnapshots
import Testing

/// A one-layer image made by hand in a fresh store: its root, its manifest with the layer as
/// built (uncompressed) and a way to get it compressed, as a build leaves them.
final class HandMadeImage: @unchecked Sendable {
    let dir: String
    let root: String
    let store: ImageStore
    let manifest: Descriptor

    init() throws {
        guard let d = makeTemporaryDirectory(prefix: NSTemporaryDirectory() + "/rbuild-exporters-") else { throw POSIXError(.EIO) }
        dir = d
        root = d + "/root"
        try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        try "hand-made\n".write(toFile: root + "/etc/motd", atomically: false, encoding: .utf8)
        store = try ImageStore(root: d + "/state")
        manifest = try Self.manifest(root: root, store: store, compression: .none, level: nil)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// The image's manifest with its layer written with `compression`, everything at epoch 0.
    static func manifest(root: String, store: ImageStore, compression: Compression, level: Int?) throws -> Descriptor {
        let layer = try writeLayer(fromDirectory: root, store: store.content,
                                   options: LayerOptions(compression: compression, level: level, sourceDateEpoch: 0))
        let config = ImageConfig(created: "1970-01-01T00:00:00Z", author: nil, architecture: "amd64", os: "linux", variant: nil,
                                 config: nil, rootfs: .init(diff_ids: [layer.diffID]), history: nil)
        let configBytes = try canonicalJSON(config)
        let configDescriptor = Descriptor(mediaType: MediaType.ociConfig, digest: try store.content.put(configBytes),
                                          size: Int64(configBytes.count))
        let bytes = try canonicalJSON(Manifest(config: configDescriptor, layers: [layer.descriptor]))
        return Descriptor(mediaType: MediaType.ociManifest, digest: try store.content.put(bytes), size: Int64(bytes.count),
                          platform: config.platform)
    }

    func request(tags: [String] = []) -> ExportRequest {
        let (root, store) = (self.root, self.store)
        return ExportRequest(images: [ExportImage(manifest: manifest, rootfs: { SnapshotView(directory: root) },
                                                  compressed: { try Self.manifest(root: root, store: store, compression: $0, level: $1) })],
                             names: tags, store: store, mapping: IDMapping.detect(), sourceDateEpoch: 0)
    }
}

@Suite struct ExporterTests {
    // skopeo and oci-image-tool read what Builder.build(_:exporters:) writes in
    // IntegrationTests/EmbeddingTests; here the store's own loader checks every digest.
    @Test("OCIExporter writes a reproducible archive that loads back as the descriptor it returned")
    func ociArchive() throws {
        let image = try HandMadeImage()
        let out = image.dir + "/out.tar"
        let exporter = OCIExporter(dest: out, names: ["hand:1"])
        #expect(exporter.title == "exporting to oci image format")
        let result = try exporter.export(image.request(tags: ["hand:2"]))
        #expect(result.names == ["hand:1", "hand:2"])
        #expect(result.summary == "exporting to \(out)")
        let manifest = try decodeJSON(Manifest.self, from: try image.store.content.read(result.descriptor), what: "manifest")
        #expect(manifest.layers.map(\.mediaType) == [MediaType.ociLayerGzip], "type=oci gzips the layers by default")
        let first = try Data(contentsOf: URL(fileURLWithPath: out))
        _ = try exporter.export(image.request(tags: ["hand:2"]))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == first, "the same image exports to the same bytes")
        let elsewhere = try ImageStore(root: image.dir + "/elsewhere")
        #expect(try elsewhere.load(path: out, name: "back:1").descriptor.digest == result.descriptor.digest)
    }

    @Test("OCIExporter with tar: false writes a layout whose index names the image by its tag")
    func ociLayout() throws {
        let image = try HandMadeImage()
        let out = image.dir + "/layout"
        let result = try OCIExporter(dest: out, tar: false, names: ["hand:1"], compression: .zstd).export(image.request())
        let index = try decodeJSON(Index.self, from: Array(try Data(contentsOf: URL(fileURLWithPath: out + "/index.json"))), what: "index")
        #expect(index.manifests.map(\.digest) == [result.descriptor.digest])
        #expect(index.manifests.first?.annotations?["org.opencontainers.image.ref.name"] == "1")
        let manifest = try decodeJSON(Manifest.self, from: try image.store.content.read(result.descriptor), what: "manifest")
        #expect(manifest.layers.map(\.mediaType) == [MediaType.ociLayerZstd])
        let elsewhere = try ImageStore(root: image.dir + "/elsewhere")
        #expect(try elsewhere.ingest(path: out) == result.descriptor)
    }

    @Test("ImageExporter names the image in the store, layers as built; LocalExporter copies its files")
    func imageAndLocal() throws {
        let image = try HandMadeImage()
        let named = try ImageExporter().export(image.request(tags: ["hand:1"]))
        #expect(named.descriptor == image.manifest && named.summary == "naming to hand:1")
        #expect(try image.store.lookup("hand:1")?.digest == image.manifest.digest)
        #expect(throws: ExportError.self) { try ImageExporter().export(image.request()) }

        let local = try LocalExporter(dest: image.dir + "/files").export(image.request())
        #expect(local.descriptor == image.manifest)
        #expect(try String(contentsOfFile: image.dir + "/files/etc/motd", encoding: .utf8) == "hand-made\n")
        #expect(throws: ExportError.self) { try LocalExporter(dest: "").export(image.request()) }
    }

    /// Each `-o` kind maps to its exporter with its options.
    @Test(arguments: [
        ("type=oci,dest=a.tar,compression=zstd,compression-level=3", "oci"),
        ("type=oci,tar=false,dest=d", "oci-dir"),
        ("type=docker,dest=d.tar,name=x:1", "docker"),
        ("out", "local"),
        ("-", "tar"),
        ("type=image,name=x:1,push=true", "image"),
        ("type=registry,compression=uncompressed", "registry"),
    ])
    func mapping(spec: String, expected: String) throws {
        let exporter = try OutputSpec.parse(spec).exporter()
        switch expected {
        case "oci":
            let e = try #require(exporter as? OCIExporter)
            #expect(e.dest == "a.tar" && e.tar && e.compression == .zstd && e.level == 3)
        case "oci-dir":
            let e = try #require(exporter as? OCIExporter)
            #expect(e.dest == "d" && !e.tar && e.compression == .gzip && e.level == nil)
        case "docker":
            let e = try #require(exporter as? DockerExporter)
            #expect(e.dest == "d.tar" && e.names == ["x:1"] && e.compression == .gzip)
        case "local": #expect((exporter as? LocalExporter)?.dest == "out")
        case "tar": #expect((exporter as? TarExporter)?.dest == "-")
        case "image":
            let e = try #require(exporter as? ImageExporter)
            #expect(e.names == ["x:1"] && e.push && e.compression == nil)
        case "registry": #expect((exporter as? RegistryExporter)?.compression == Compression.none)
        default: Issue.record("no case \(expected)")
        }
    }

    @Test func mappingRejectsWhatCannotBeWritten() {
        #expect(throws: ExportError.self) { try OutputSpec.parse("type=docker,dest=d,tar=false").exporter() }
        #expect(throws: ExportError.self) { try OutputSpec.parse("type=oci,dest=d,compression=lz4").exporter() }
    }

    /// buildx's `type=cacheonly`: parsed, and no exporter (the build leaves only its cache).
    @Test func cacheOnlyHasNoExporter() throws {
        #expect(try OutputSpec.parse("type=cacheonly").kind == .cacheonly)
        #expect(throws: ExportError.self) { try OutputSpec.parse("type=cacheonly").exporter() }
    }
}

/// `--annotation`, as buildx parses it.
struct AnnotationTests {
    @Test func levelsAndPlatforms() throws {
        var a = ImageAnnotations()
        try a.add("org.opencontainers.image.title=app")
        try a.add("index,manifest-descriptor:org.example.k=v=w")
        try a.add("manifest[linux/arm64]:only.arm=yes")
        try a.add("index-descriptor:entry=1")
        #expect(a.values(.manifest, platform: try Platform(parsing: "linux/amd64")) == ["org.opencontainers.image.title": "app"])
        #expect(a.values(.manifest, platform: try Platform(parsing: "linux/arm64/v8"))
                == ["org.opencontainers.image.title": "app", "only.arm": "yes"])
        #expect(a.values(.index) == ["org.example.k": "v=w"])
        #expect(a.values(.manifestDescriptor, platform: try Platform(parsing: "linux/amd64")) == ["org.example.k": "v=w"])
        #expect(a.values(.indexDescriptor) == ["entry": "1"])
    }

    @Test(arguments: ["novalue", "bogus:k=v", "index[linux/amd64]:k=v", "manifest:=v"])
    func refuses(_ text: String) {
        var a = ImageAnnotations()
        #expect(throws: (any Error).self) { try a.add(text) }
    }
}
