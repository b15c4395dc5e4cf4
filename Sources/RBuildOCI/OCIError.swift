/// Every failure of the image layer: what, which blob/file/entry, and what to do.
public struct OCIError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case invalidDigest, corruptBlob, missingBlob, io, invalidJSON, unsafeEntry, unsupported, notFound, invalidArgument
        /// A manifest or index that is not what its descriptor says, or not one at all (`Document.decode`).
        case invalidDocument
        /// Over a limit: a manifest or index over 4 MiB, a layer over `--max-layer-size`.
        case tooLarge
        /// Indexes stacked deeper than `DocumentLimits.maxDepth`.
        case tooDeep
        /// A layer whose uncompressed tar is not the diff_id its image's config gives.
        case diffIDMismatch
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
