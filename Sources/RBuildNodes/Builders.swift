import Foundation
import RBuildOCI
import RBuildSystem

/// An error about builders and nodes: which builder or node, what failed, what to do.
public struct NodeError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}

/// Where a node is: `ssh://[USER@]HOST[:PORT]`, reached with the system ssh client (so the
/// user's ~/.ssh/config, agent and known_hosts apply; HOST may be a Host alias of that config).
public struct NodeEndpoint: Sendable, Equatable, Codable, CustomStringConvertible {
    public var user: String?
    public var host: String
    public var port: Int?

    public init(parsing text: String) throws {
        guard text.hasPrefix("ssh://") else {
            throw NodeError("node \(text): expected ssh://[USER@]HOST[:PORT] (rbuild reaches nodes with the system ssh client)")
        }
        var rest = Substring(text.dropFirst(6))
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/") else { throw NodeError("node \(text): expected ssh://[USER@]HOST[:PORT], with no path") }
        if let at = rest.lastIndex(of: "@") {
            user = String(rest[..<at])
            rest = rest[rest.index(after: at)...]
            guard !user!.isEmpty else { throw NodeError("node \(text): the user before @ is empty") }
        }
        // [v6]:port, host:port, host
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw NodeError("node \(text): an unclosed [ in the host") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if rest.hasPrefix(":") { port = Int(rest.dropFirst()); guard port != nil else { throw NodeError("node \(text): the port is not a number") } }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                throw NodeError("node \(text): the port is not a number from 1 to 65535")
            }
            port = p
        } else {
            host = String(rest)
        }
        guard !host.isEmpty, !host.hasPrefix("-") else { throw NodeError("node \(text): the host is empty or starts with -") }
        if let user, user.hasPrefix("-") { throw NodeError("node \(text): the user starts with -") }
    }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "ssh://" + (user.map { $0 + "@" } ?? "") + h + (port.map { ":\($0)" } ?? "")
    }
}

/// One node of a builder: a machine with rbuild on it.
public struct BuilderNode: Sendable, Codable, Equatable {
    public var name: String
    public var endpoint: NodeEndpoint
    /// The platforms declared with `--platform` at create: what the node builds natively
    /// (buildx's meaning); empty: what its probe says.
    public var platforms: [String]
    /// `--driver-opt`: `rbuild=PATH` (the program on the node; default `rbuild` on its PATH),
    /// `root=DIR` (its state dir; default the node user's).
    public var options: [String: String]
    /// The last probe (`builder inspect`, or a build that needed it).
    public var probe: NodeProbe?

    public init(name: String, endpoint: NodeEndpoint, platforms: [String] = [], options: [String: String] = [:]) {
        self.name = name
        self.endpoint = endpoint
        self.platforms = platforms
        self.options = options
    }

    /// The node's rbuild running `subcommand` (with the node's state dir when `root` is set and
    /// `stateDirectory`), as words for the remote shell.
    public func remoteCommand(_ subcommand: [String], stateDirectory: Bool = false) -> [String] {
        var words = [options["rbuild"] ?? "rbuild"] + subcommand
        if stateDirectory, let root = options["root"] { words += ["--root", root] }
        return words
    }

    /// The `--driver-opt` keys a node takes.
    public static let knownOptions = ["rbuild", "root"]
}

/// What a node said about itself: `rbuild --version` and `rbuild info --format json` there.
public struct NodeProbe: Sendable, Codable, Equatable {
    public var version: String
    public var architecture: String
    /// Platforms it runs natively (its own architecture and those the CPU runs, such as 386 on amd64).
    public var native: [String]
    /// Platforms it runs through an emulator (qemu-user-static).
    public var emulated: [String]
    public var time: Int64
}

/// A named set of nodes (`rbuild builder create`).
public struct BuilderConfig: Sendable, Codable, Equatable {
    public var name: String
    public var nodes: [BuilderNode]

    public init(name: String, nodes: [BuilderNode]) {
        self.name = name
        self.nodes = nodes
    }
}

/// The builders of this user: one JSON file each under `$XDG_CONFIG_HOME/rbuild/builders/`
/// (default ~/.config), and `current` naming the one `builder use` chose. `default` is the
/// local machine alone and has no file.
public struct BuilderStore: Sendable {
    public let directory: String
    public static let defaultName = "default"

    public init(directory: String? = nil) {
        if let directory {
            self.directory = directory
        } else {
            let env = ProcessInfo.processInfo.environment
            let config = env["XDG_CONFIG_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil }
                ?? homeDirectory() + "/.config"
            self.directory = config + "/rbuild/builders"
        }
    }

    static func checkName(_ name: String) throws {
        let ok = !name.isEmpty && name.count <= 64 && name.unicodeScalars.allSatisfy {
            CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_.".unicodeScalars.contains($0)
        } && !name.hasPrefix(".") && !name.hasPrefix("-")
        guard ok else { throw NodeError("builder name \"\(name)\": use letters, digits, - _ and . (not first), at most 64") }
    }

    func path(_ name: String) -> String { directory + "/" + name + ".json" }

    /// Every stored builder, by name.
    public func list() throws -> [BuilderConfig] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        return try names.filter { $0.hasSuffix(".json") }.sorted().map { try load(String($0.dropLast(5))) }
    }

    public func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: path(name)) }

    /// `RBUILD_BUILDER`, when set and not empty.
    static var environmentChoice: String? {
        getenv("RBUILD_BUILDER").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether a build that names no builder itself is `default`'s, as `resolve(nil)` decides:
    /// no `RBUILD_BUILDER` and no builder stored (no file is read).
    public var onlyDefault: Bool { Self.environmentChoice == nil && isEmpty }

    /// Whether any builder is stored (no file is read): without one, every build is `default`'s.
    public var isEmpty: Bool {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return true }
        return !names.contains { $0.hasSuffix(".json") }
    }

    public func load(_ name: String) throws -> BuilderConfig {
        try Self.checkName(name)
        guard let data = FileManager.default.contents(atPath: path(name)) else {
            throw NodeError("no builder named \(name) (rbuild builder ls lists them; rbuild builder create makes one)")
        }
        do {
            return try JSONDecoder().decode(BuilderConfig.self, from: data)
        } catch {
            throw NodeError("builder \(name): \(path(name)) cannot be read: \(error) (remove it with rbuild builder rm \(name))")
        }
    }

    /// Writes the builder's file (atomically: a crash leaves the old one or the new one).
    public func save(_ builder: BuilderConfig) throws {
        try Self.checkName(builder.name)
        guard builder.name != Self.defaultName else { throw NodeError("\(Self.defaultName) is the local builder; choose another name") }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let bytes = [UInt8](try e.encode(builder))
        try replaceAtomically(path(builder.name), isDirectory: false) { try writeNewFile($0, bytes) }
    }

    public func remove(_ name: String) throws {
        try Self.checkName(name)
        guard unlink(path(name)) == 0 else {
            throw NodeError(errno == ENOENT ? "no builder named \(name)" : "cannot remove \(path(name)): \(errnoText(errno))")
        }
        if current() == name { unlink(directory + "/current") }
    }

    /// The builder `builder use` chose (nil: default).
    public func current() -> String? {
        guard let data = FileManager.default.contents(atPath: directory + "/current") else { return nil }
        let name = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return name.isEmpty || name == Self.defaultName ? nil : name
    }

    public func use(_ name: String) throws {
        if name != Self.defaultName { _ = try load(name) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try replaceAtomically(directory + "/current", isDirectory: false) { try writeNewFile($0, Array((name + "\n").utf8)) }
    }

    /// The builder a build uses: `name` (`--builder`), else `RBUILD_BUILDER`, else `builder use`'s;
    /// nil for the local default.
    public func resolve(_ name: String?) throws -> BuilderConfig? {
        let chosen = name ?? Self.environmentChoice ?? current()
        guard let chosen, chosen != Self.defaultName else { return nil }
        return try load(chosen)
    }
}
