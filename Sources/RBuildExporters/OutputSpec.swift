import Foundation
import RBuildOCI
import RBuildSystem

/// An `-o` / `--output` value as docker buildx takes it: `type=oci,dest=out.tar`, or the
/// shorthands `DIR` (type=local,dest=DIR) and `-` (type=tar to stdout).
public struct OutputSpec: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case oci, docker, local, tar, image, registry
        /// Built into the cache only, exported nowhere (buildx's `type=cacheonly`; bake gives it
        /// to a target that only another target's `target:` context names).
        case cacheonly
    }
    public var kind: Kind
    public var attributes: [String: String]

    public init(kind: Kind, attributes: [String: String] = [:]) {
        self.kind = kind
        self.attributes = attributes
    }

    public static func parse(_ text: String) throws -> OutputSpec {
        if !text.contains("=") {
            return text == "-" ? OutputSpec(kind: .tar, attributes: ["dest": "-"]) : OutputSpec(kind: .local, attributes: ["dest": text])
        }
        var attrs: [String: String] = [:]
        for field in splitOptionFields(text) {
            let kv = field.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else {
                throw ExportError("-o \(text): \"\(field)\" is not KEY=VALUE")
            }
            attrs[kv[0].lowercased()] = kv[1]
        }
        guard let t = attrs.removeValue(forKey: "type") else {
            throw ExportError("-o \(text): no type= given (oci, docker, local, tar, image or registry)")
        }
        guard let kind = Kind(rawValue: t) else {
            throw ExportError("-o \(text): unknown type \"\(t)\" (expected oci, docker, local, tar, image, registry or cacheonly)")
        }
        let known: Set<String> = ["dest", "name", "tar", "compression", "compression-level", "force-compression",
                                  "rewrite-timestamp", "push", "oci-mediatypes", "unpack", "annotation", "store"]
        for k in attrs.keys where !known.contains(k) && !k.hasPrefix("annotation.") {
            throw ExportError("-o \(text): unknown attribute \"\(k)\"")
        }
        return OutputSpec(kind: kind, attributes: attrs)
    }

    public var destination: String? { attributes["dest"] }

    /// `type=KIND,key=value,…` (keys sorted): as a build record shows the output.
    public var description: String {
        (["type=\(kind.rawValue)"] + attributes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }).joined(separator: ",")
    }

    /// The names `name=` gives (comma-separated inside quotes).
    public var imageNames: [String] {
        attributes["name"].map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? []
    }

    /// Names for the image: `name=` joined with the `-t` tags.
    public func names(tags: [String]) -> [String] { joinNames(imageNames, tags) }

    /// The layer compression this output asks for, if any.
    public func compression() throws -> (Compression, Int?)? {
        guard let c = attributes["compression"] else {
            if attributes["compression-level"] != nil {
                throw ExportError("compression-level needs compression=gzip or zstd")
            }
            return nil
        }
        let kind: Compression
        switch c {
        case "gzip": kind = .gzip
        case "zstd": kind = .zstd
        case "uncompressed": kind = .none
        default: throw ExportError("compression=\(c): expected gzip, zstd or uncompressed")
        }
        var level: Int?
        if let l = attributes["compression-level"] {
            guard let n = Int(l), kind == .gzip ? (0...9).contains(n) : (1...22).contains(n) else {
                throw ExportError("compression-level=\(l): expected 0-9 for gzip, 1-22 for zstd")
            }
            level = n
        }
        return (kind, level)
    }
}

extension OutputSpec {
    /// The exporter this output asks for. What can be checked before a build is checked here
    /// (compression, type=docker's tar=false); the rest when it writes, as before.
    public func exporter() throws -> any Exporter {
        let c = try compression()
        // A missing dest= is reported when the exporter writes (`needs dest=PATH`).
        let dest = destination ?? ""
        switch kind {
        case .oci:
            return OCIExporter(dest: dest, tar: attributes["tar"] != "false", names: imageNames,
                               compression: c?.0 ?? .gzip, level: c?.1)
        case .docker:
            if attributes["tar"] == "false" { throw ExportError("type=docker has no tar=false form") }
            if dest.isEmpty { _ = try DockerExporter.loader() }   // into docker or podman: say now if neither is here
            return DockerExporter(dest: dest, names: imageNames, compression: c?.0 ?? .gzip, level: c?.1)
        case .local: return LocalExporter(dest: dest, names: imageNames)
        case .tar: return TarExporter(dest: dest, names: imageNames)
        case .image: return ImageExporter(names: imageNames, compression: c?.0, level: c?.1, push: attributes["push"] == "true")
        case .registry: return RegistryExporter(names: imageNames, compression: c?.0 ?? .gzip, level: c?.1)
        case .cacheonly: throw ExportError("type=cacheonly has no exporter: it is the build with no export")
        }
    }
}
