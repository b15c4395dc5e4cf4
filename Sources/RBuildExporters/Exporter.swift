import Foundation
import RBuildAttest
import RBuildOCI
import RBuildSystem
import RBuildSnapshots

/// Writes a built image somewhere: an archive or layout, a directory, a tarball, the local
/// store, a registry — one type per kind of `-o` (buildkit's `exporter/` has the same split).
/// `OutputSpec.exporter()` maps a parsed `-o` to one; an embedder can make them directly.
public protocol Exporter: Sendable {
    /// The name of its progress step, as buildx shows it (`exporting to oci image format`).
    var title: String { get }
    /// Writes `request`'s images. `progress` gets lines for the step's log (blobs pushed).
    func export(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult
}

extension Exporter {
    public func export(_ request: ExportRequest) throws -> ExportResult {
        try export(request, progress: { _ in })
    }
}

/// What one exporter wrote.
public struct ExportResult: Sendable {
    /// The image as written: one manifest, or the index of several platforms' (layers
    /// compressed as the exporter asked). type=local and type=tar: the image as built.
    public var descriptor: Descriptor
    /// The step's last line (`exporting to app.tar`).
    public var summary: String
    /// The names the image was given: the exporter's own, then the request's, as written.
    public var names: [String]

    public init(descriptor: Descriptor, summary: String, names: [String]) {
        self.descriptor = descriptor
        self.summary = summary
        self.names = names
    }
}

public struct ExportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}

/// One platform's image as the exporters see it.
public struct ExportImage {
    /// Its manifest (layers as built), with its platform.
    public var manifest: Descriptor
    /// The root filesystem, made on demand (type=local and type=tar only).
    public var rootfs: () throws -> SnapshotView
    /// The manifest with its layers compressed so (builds make them uncompressed).
    public var compressed: (Compression, Int?) throws -> Descriptor
    /// Its provenance and SBOM (`--attest`): attached to the manifest an exporter writes, in an
    /// attestation manifest beside it in the index.
    public var attestations: [Attestation]

    public init(manifest: Descriptor, rootfs: @escaping () throws -> SnapshotView,
                compressed: @escaping (Compression, Int?) throws -> Descriptor, attestations: [Attestation] = []) {
        self.manifest = manifest
        self.rootfs = rootfs
        self.compressed = compressed
        self.attestations = attestations
    }

    /// buildx's directory name for a platform in multi-platform local and tar outputs: linux_arm_v7.
    public var directoryName: String {
        (manifest.platform?.description ?? "unknown").replacingOccurrences(of: "/", with: "_")
    }
}

/// What the exporters are given: the image of each platform built, their names, the store.
public struct ExportRequest {
    public var images: [ExportImage]
    /// Names every exporter that names the image adds after its own (`-t`).
    public var names: [String]
    public var store: ImageStore
    public var mapping: IDMapping
    public var sourceDateEpoch: Int64?
    /// `--annotation`: written into the manifests and index of every output that writes an image.
    public var annotations: ImageAnnotations

    public init(images: [ExportImage], names: [String], store: ImageStore, mapping: IDMapping, sourceDateEpoch: Int64?,
                annotations: ImageAnnotations = ImageAnnotations()) {
        self.images = images
        self.names = names
        self.store = store
        self.mapping = mapping
        self.sourceDateEpoch = sourceDateEpoch
        self.annotations = annotations
    }

    /// The image to write: the one manifest, or an OCI index of every platform's, each with its
    /// layers compressed as asked (nil: as built) and the annotations applied. Attestations
    /// (unless `attestations` is false: a Docker archive has no place for them) make it an index
    /// even for one platform, each manifest followed by its attestation manifest, as buildx
    /// writes them (the attestations name the annotated manifest).
    public func image(compression: Compression?, level: Int? = nil, attestations: Bool = true) throws -> Descriptor {
        var manifests: [Descriptor] = []
        var attested = false
        for i in images {
            let m = try annotations.apply(toManifest: try compression.map { try i.compressed($0, level) } ?? i.manifest, store: store.content)
            manifests.append(m)
            if attestations && !i.attestations.isEmpty {
                manifests.append(try AttestationManifest.make(subject: m, subjectName: names.first ?? "image",
                                                              attestations: i.attestations, store: store.content))
                attested = true
            }
        }
        let top: Descriptor
        if manifests.count == 1 && !attested {
            top = manifests[0]
        } else {
            let own = annotations.values(.index)
            let index = Index(mediaType: MediaType.ociIndex, manifests: manifests, annotations: own.isEmpty ? nil : own)
            let bytes = try canonicalJSON(index)
            top = Descriptor(mediaType: MediaType.ociIndex, digest: try store.content.put(bytes), size: Int64(bytes.count))
        }
        let entry = annotations.values(.indexDescriptor)
        guard !entry.isEmpty else { return top }
        var d = top
        d.annotations = (d.annotations ?? [:]).merging(entry) { _, new in new }
        return d
    }

    /// An exporter's names followed by the request's: as written, and in the store's normal form
    /// (which rejects a name that is not one).
    func names(_ own: [String]) throws -> (given: [String], normalised: [String]) {
        let given = joinNames(own, names)
        return (given, try given.map(ImageStore.normalise))
    }

    /// Writes `dest` whole or not at all (`body` fills a temporary path that is then renamed);
    /// `-` is a file in the state dir that is then copied to stdout.
    func output(to dest: String, isDirectory: Bool, _ body: (String) throws -> Void) throws {
        let file = dest == "-" ? try stdoutStaging() : dest
        try replaceAtomically(file, isDirectory: isDirectory, body)
        if dest == "-" { try streamToStdout(file) }
    }

    /// A file beside nothing in particular that stands in for stdout.
    func stdoutStaging() throws -> String {
        try FileManager.default.createDirectory(atPath: store.layout.tmp, withIntermediateDirectories: true)
        return store.layout.tmp + "/stdout-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).tar"
    }

    func streamToStdout(_ file: String) throws {
        defer { unlink(file) }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ExportError("cannot read \(file)") }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            try buf.withUnsafeBytes { try writeAll(1, UnsafeRawBufferPointer(rebasing: $0[0..<n]), path: "stdout") }
        }
    }
}

/// `own` then `more`, each name once.
func joinNames(_ own: [String], _ more: [String]) -> [String] {
    var seen = Set<String>()
    return (own + more).filter { seen.insert($0).inserted }
}

/// A destination the exporter cannot go without.
func requireDestination(_ dest: String, _ kind: String) throws -> String {
    guard !dest.isEmpty else { throw ExportError("type=\(kind) needs dest=PATH") }
    return dest
}
