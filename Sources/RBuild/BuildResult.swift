import Foundation

/// What `Builder.build(_:outputs:tags:)` leaves: the images, what the first output wrote, the
/// image id and buildx's metadata. An embedder gets what `rbuild build` gets, with no CLI code.
public struct BuildResult: Sendable {
    /// One image per platform, as built (layers uncompressed, in the local store).
    public var images: [BuiltImage]
    /// The image as the first output wrote it (its layers compressed as that output asked): one
    /// manifest, or the index of several platforms'. The first image when there was no output.
    public var descriptor: Descriptor
    /// Docker's image id: the config digest of a one-platform image, else the index digest.
    public var imageID: Digest
    /// The config digest of a one-platform image.
    public var configDigest: Digest?
    /// Every name the outputs gave the image (tags, `name=`).
    public var names: [String]

    /// The `--metadata-file` document, in buildx's keys: `containerimage.digest`,
    /// `containerimage.config.digest`, `containerimage.descriptor`, `image.name`.
    public func metadataJSON() throws -> Data {
        var meta: [String: Any] = ["containerimage.digest": descriptor.digest.description]
        var d: [String: Any] = ["mediaType": descriptor.mediaType, "digest": descriptor.digest.description, "size": descriptor.size]
        if let configDigest {
            meta["containerimage.config.digest"] = configDigest.description
            let c = images[0].config
            d["platform"] = ["os": c.os, "architecture": c.architecture].merging(c.variant.map { ["variant": $0] } ?? [:]) { a, _ in a }
        }
        meta["containerimage.descriptor"] = d
        if !names.isEmpty { meta["image.name"] = names.joined(separator: ",") }
        return try JSONSerialization.data(withJSONObject: meta, options: [.prettyPrinted, .sortedKeys])
    }
}

extension Builder {
    /// Builds every platform `options` asks for, then writes each output in turn (each a progress
    /// step; `type=registry` and `push=true` push), as `rbuild build -o … -t …` does.
    public func build(_ options: BuildOptions, outputs: [OutputSpec], tags: [String] = []) throws -> BuildResult {
        let reporter = options.reporter ?? ProgressReporter(sink: nil)
        let images = try build(platforms: options)
        var exported: Descriptor?
        for spec in outputs {
            try reporter.step(Self.title(spec.kind)) { step in
                let request = ExportRequest(images: images.map { image in
                    ExportImage(manifest: image.manifest, rootfs: { SnapshotView(try self.rootfs(of: image)) },
                                compressed: { try self.exportable(image, compression: $0, level: $1) })
                }, names: tags, store: store, mapping: snapshotter.mapping,
                   sourceDateEpoch: options.layer.sourceDateEpoch, push: { image, name in
                    let ref = try Reference(parsing: name)
                    _ = try Distribution.push(image, to: ref, store: self.store) { step.output($0) }
                    step.output("pushed \(ref)")
                })
                let (summary, written) = try Exporters.export(spec, request)
                step.output("exporting manifest \(written.digest) done")
                step.output(summary + " done")
                if exported == nil { exported = written }
            }
        }
        let top = exported ?? images[0].manifest
        var config: Digest?
        if !MediaType.isIndex(top.mediaType) {
            config = try decodeJSON(Manifest.self, from: try store.content.read(top), what: "manifest").config.digest
        }
        let names = Array(Set(outputs.flatMap { $0.names(tags: tags) })).sorted()
        return BuildResult(images: images, descriptor: top, imageID: config ?? top.digest, configDigest: config, names: names)
    }

    static func title(_ kind: OutputSpec.Kind) -> String {
        switch kind {
        case .image: return "exporting to image"
        case .oci: return "exporting to oci image format"
        case .docker: return "exporting to docker image format"
        case .local: return "copying files"
        case .tar: return "sending tarball"
        case .registry: return "pushing to registry"
        }
    }
}
