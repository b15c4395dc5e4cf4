import Foundation
import RBuildDockerfile
import RBuildExporters
import RBuildNodes
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// What `Builder.build(_:exporters:tags:)` leaves: the images, what the first exporter wrote, the
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
    /// Builds every platform `options` asks for, then runs each exporter in turn, each a progress
    /// step: `try builder.build(options, exporters: [OCIExporter(dest: "app.tar")], tags: ["app:1"])`.
    /// `tags` name the image in every exporter after its own names, as `-t` does.
    /// Unless `options.recordHistory` is false, the build leaves a record (`BuildHistory`).
    public func build(_ options: BuildOptions, exporters: [any Exporter], tags: [String] = []) throws -> BuildResult {
        try build(options, exporters: exporters, tags: tags, outputs: exporters.map(\.title))
    }

    func build(_ options: BuildOptions, exporters: [any Exporter], tags: [String], outputs: [String],
               nodes: [NodeLink] = [], specs: [OutputSpec] = []) throws -> BuildResult {
        var options = options
        let reporter = options.reporter ?? ProgressReporter(sink: options.progress)
        options.reporter = reporter
        guard options.recordHistory else {
            return try export(options, exporters: exporters, tags: tags, reporter: reporter, nodes: nodes, specs: specs)
        }
        let recorder = BuildRecorder(history: BuildHistory(layout: store.layout), options: options, outputs: outputs, tags: tags)
        reporter.observe(recorder)
        defer { reporter.stopObserving(recorder) }
        do {
            let result = try export(options, exporters: exporters, tags: tags, reporter: reporter, nodes: nodes, specs: specs)
            recorder.finish(error: nil, image: result.descriptor.digest)
            return result
        } catch {
            recorder.finish(error: error)
            throw error
        }
    }

    func export(_ options: BuildOptions, exporters: [any Exporter], tags: [String], reporter: ProgressReporter,
                nodes: [NodeLink], specs: [OutputSpec]) throws -> BuildResult {
        let images = nodes.isEmpty ? try build(platforms: options)
            : try buildAcrossNodes(options, nodes: nodes, outputs: specs, tags: tags, reporter: reporter)
        let request = ExportRequest(images: images.map { image in
            ExportImage(manifest: image.manifest, rootfs: { SnapshotView(try self.rootfs(of: image)) },
                        compressed: { try self.exportable(image, compression: $0, level: $1) }, attestations: image.attestations)
        }, names: tags, store: store, mapping: snapshotter.mapping, sourceDateEpoch: options.layer.sourceDateEpoch,
           annotations: options.annotations)
        if images.count == 1 && images[0].attestations.isEmpty && !options.annotations.values(.index).isEmpty {
            reporter.note("WARNING: --annotation index:…: a one-platform image has no index; those annotations are not written")
        }
        var results: [ExportResult] = []
        for exporter in exporters {
            try reporter.step((options.label.map { "[\($0)] " } ?? "") + exporter.title) { step in
                let result = try exporter.export(request) { step.output($0) }
                step.output("exporting manifest \(result.descriptor.digest) done")
                step.output(result.summary + " done")
                results.append(result)
            }
        }
        let top = results.first?.descriptor ?? images[0].manifest
        var config: Digest?
        if !MediaType.isIndex(top.mediaType) {
            config = try decodeManifest(try store.content.read(top), as: top).config.digest
        }
        let names = Array(Set(results.flatMap(\.names))).sorted()
        return BuildResult(images: images, descriptor: top, imageID: config ?? top.digest, configDigest: config, names: names)
    }

    /// `rbuild build -o … -t …`: each output mapped to its exporter (`OutputSpec.exporter()`,
    /// which checks what it can before anything is built; `type=cacheonly` has none), then
    /// `build(_:exporters:tags:)`. With `nodes` (`NodeLink.connect`, `Builder.connectNodes`),
    /// their platforms are built there and the rest here, and the outputs hold them all.
    public func build(_ options: BuildOptions, outputs: [OutputSpec], tags: [String] = [], nodes: [NodeLink] = []) throws -> BuildResult {
        try build(options, exporters: try outputs.filter { $0.kind != .cacheonly }.map { try $0.exporter() }, tags: tags,
                  outputs: outputs.map(\.description), nodes: nodes, specs: outputs)
    }
}
