import Foundation

// The resolved form of a bake file (HCL, JSON or compose): targets and groups, as
// `docker buildx bake --print` shows them. RBuildBake reads files into this; RBuild builds it.

/// A bake file's name (for messages) and bytes.
public struct BakeFile: Sendable, Equatable {
    public var name: String
    public var contents: [UInt8]
    public init(name: String, contents: [UInt8]) {
        self.name = name
        self.contents = contents
    }
}

/// A bake file that cannot be read: where (file, line, column; 0 when unknown) and why.
public struct BakeError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String
    public init(file: String, line: Int = 0, column: Int = 0, _ message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }
    public var description: String {
        line > 0 ? "\(file):\(line):\(column): \(message)" : (file.isEmpty ? message : "\(file): \(message)")
    }
}

/// One target, every attribute resolved (variables, functions, inherits, matrix and `--set`
/// applied). Field names follow buildx's bake keys (`dockerfile-inline`, `cache-from`, …).
public struct BakeTarget: Sendable, Equatable {
    public var name: String
    public var description: String?
    public var context: String?
    public var dockerfile: String?
    public var dockerfileInline: String?
    /// Build args; a nil value is an arg declared without one (buildx's `null`).
    public var args: [String: String?] = [:]
    public var labels: [String: String?] = [:]
    public var tags: [String] = []
    public var target: String?
    public var platforms: [String] = []
    /// Named contexts: a directory, `docker-image://REF`, `oci-layout://DIR`, or `target:OTHER`.
    public var contexts: [String: String] = [:]
    public var cacheFrom: [String] = []
    public var cacheTo: [String] = []
    public var secrets: [String] = []
    public var ssh: [String] = []
    public var outputs: [String] = []
    public var network: String?
    public var noCache: Bool?
    public var noCacheFilter: [String] = []
    public var pull: Bool?
    public var attest: [String] = []
    public var annotations: [String] = []
    public var entitlements: [String] = []

    public init(name: String) { self.name = name }
}

/// What the files define, resolved.
public struct BakeDefinition: Sendable {
    /// By name.
    public var targets: [String: BakeTarget] = [:]
    /// Group name → the target or group names it lists, in order.
    public var groups: [String: [String]] = [:]
    /// Every `variable` block: its name, value (after the environment) and description.
    public var variables: [BakeVariable] = []
    /// Group name → its `description`, when it has one.
    public var groupDescriptions: [String: String] = [:]
    /// Target names in the order the files define them (globs and `--list` follow it).
    public var targetOrder: [String] = []
    public init() {}
}

public struct BakeVariable: Sendable, Equatable {
    public var name: String
    public var value: String?
    public var description: String?
    public init(name: String, value: String?, description: String?) {
        self.name = name
        self.value = value
        self.description = description
    }
}
