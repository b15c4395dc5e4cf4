import Foundation
import RBuildOCI
import RBuildRegistry

/// `type=image`: names the image in the local store (`rbuild images`, `FROM`), its layers as
/// built unless a compression is asked for; `push: true` also pushes it under each name.
public struct ImageExporter: Exporter {
    public var names: [String]
    /// nil: the layers as built (uncompressed). What is pushed is gzip unless this says otherwise.
    public var compression: Compression?
    public var level: Int?
    public var push: Bool

    public init(names: [String] = [], compression: Compression? = nil, level: Int? = nil, push: Bool = false) {
        self.names = names
        self.compression = compression
        self.level = level
        self.push = push
    }

    public var title: String { "exporting to image" }

    public func export(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult {
        let names = try request.names(self.names)
        guard !names.normalised.isEmpty else { throw ExportError("type=image needs a name: -t NAME or name=NAME") }
        let image = try request.image(compression: compression, level: level)
        for n in names.normalised { try request.store.tag(n, image) }
        var summary = "naming to " + names.normalised.joined(separator: ", ")
        if push {
            _ = try pushImage(request, names.normalised, compression: compression ?? .gzip, level: compression == nil ? nil : level,
                              progress: progress)
            summary += ", pushed"
        }
        return ExportResult(descriptor: image, summary: summary, names: names.given)
    }
}

/// `type=registry`: pushes the image under each name, its layers gzip unless asked otherwise;
/// nothing is kept in the local store but the blobs.
public struct RegistryExporter: Exporter {
    public var names: [String]
    public var compression: Compression
    public var level: Int?

    public init(names: [String] = [], compression: Compression = .gzip, level: Int? = nil) {
        self.names = names
        self.compression = compression
        self.level = level
    }

    public var title: String { "pushing to registry" }

    public func export(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult {
        let names = try request.names(self.names)
        guard !names.normalised.isEmpty else { throw ExportError("type=registry needs a name: -t NAME or name=NAME") }
        let image = try pushImage(request, names.normalised, compression: compression, level: level, progress: progress)
        return ExportResult(descriptor: image, summary: "pushed " + names.normalised.joined(separator: ", "), names: names.given)
    }
}

/// Pushes the image, its layers compressed so, under each name; returns what was pushed.
func pushImage(_ request: ExportRequest, _ names: [String], compression: Compression, level: Int?,
               progress: @escaping @Sendable (String) -> Void) throws -> Descriptor {
    let image = try request.image(compression: compression, level: level)
    for name in names {
        let ref = try Reference(parsing: name)
        _ = try Distribution.push(image, to: ref, store: request.store, progress: progress)
        progress("pushed \(ref)")
    }
    return image
}
