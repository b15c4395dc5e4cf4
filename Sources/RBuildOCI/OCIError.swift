/// Every failure of the image layer: what, which blob/file/entry, and what to do.
public struct OCIError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case invalidDigest, corruptBlob, missingBlob, io, invalidJSON, unsafeEntry, unsupported, notFound, invalidArgument
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
