/// A line range in a Dockerfile (1-based, inclusive).
public struct SourceRange: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var startLine: Int
    public var endLine: Int
    public var startColumn: Int

    public init(startLine: Int, endLine: Int, startColumn: Int = 1) {
        self.startLine = startLine
        self.endLine = endLine
        self.startColumn = startColumn
    }

    public var description: String { startLine == endLine ? "\(startLine)" : "\(startLine)-\(endLine)" }
}

/// Everything that can be wrong with a Dockerfile, located: `Dockerfile:7:1: unknown flag: --form`.
public struct DockerfileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int = 1, _ message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public var description: String {
        line > 0 ? "\(file):\(line):\(column): \(message)" : "\(file): \(message)"
    }
}

/// An error from a helper that does not know where it is yet; the parser adds the location.
struct LocalError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
