import Foundation
import RBuildOCI
import RBuildSystem

/// Which steps a cache export holds: `min`, the steps of the images built (their stages' chains
/// down to the base image); `max`, every step of every stage the build reached.
public enum CacheExportMode: String, Sendable {
    case min, max
}

/// A `--cache-from` value as buildx takes it: `type=local,src=DIR[,digest=sha256:…][,tag=T]`,
/// `type=registry,ref=REF`, or `REF` alone (a registry cache, or an image with an inline cache).
public struct CacheImportSpec: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case local(directory: String, tag: String?, digest: Digest?)
        case registry(reference: String)
    }
    public var kind: Kind

    public init(_ kind: Kind) { self.kind = kind }

    public static func parse(_ text: String) throws -> CacheImportSpec {
        let (type, attrs) = try CacheSpecFields.parse(text, flag: "--cache-from")
        switch type {
        case "local":
            try CacheSpecFields.allow(attrs, ["src", "digest", "tag"], text, flag: "--cache-from")
            guard let src = attrs["src"], !src.isEmpty else {
                throw SolveError("--cache-from \(text): type=local needs src=DIR (a directory a --cache-to type=local,dest=DIR wrote)")
            }
            var digest: Digest?
            if let d = attrs["digest"] {
                do { digest = try Digest(parsing: d) } catch { throw SolveError("--cache-from \(text): \(error)") }
            }
            return CacheImportSpec(.local(directory: src, tag: attrs["tag"], digest: digest))
        case "registry":
            try CacheSpecFields.allow(attrs, ["ref"], text, flag: "--cache-from")
            guard let ref = attrs["ref"], !ref.isEmpty else { throw SolveError("--cache-from \(text): type=registry needs ref=NAME") }
            return CacheImportSpec(.registry(reference: ref))
        default:
            throw CacheSpecFields.unknownType(type, text, flag: "--cache-from", known: "local or registry")
        }
    }

    public var description: String {
        switch kind {
        case .local(let dir, _, _): return "type=local,src=\(dir)"
        case .registry(let ref): return ref
        }
    }
}

/// A `--cache-to` value as buildx takes it: `type=local,dest=DIR`, `type=registry,ref=REF`,
/// `type=inline`, or `REF` alone (type=registry); with `mode=min|max`, `compression=…`,
/// `compression-level=N`, `image-manifest=true|false`, `ignore-error=true` and rbuild's
/// `cache-mounts=true` (the `RUN --mount=type=cache` directories the build used, exported too).
public struct CacheExportSpec: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case local(directory: String, tag: String)
        case registry(reference: String)
        /// The cache in the built image's config (min mode only, as BuildKit).
        case inline
    }
    public var kind: Kind
    public var mode: CacheExportMode = .min
    public var compression: Compression = .gzip
    public var level: Int?
    /// A manifest whose config is the cache config, for registries that refuse an index of
    /// blobs (ECR); else an index.
    public var imageManifest = false
    public var cacheMounts = false
    /// A failed export is a warning, not a failed build.
    public var ignoreError = false

    public init(_ kind: Kind) { self.kind = kind }

    public static func parse(_ text: String) throws -> CacheExportSpec {
        let (type, attrs) = try CacheSpecFields.parse(text, flag: "--cache-to")
        var spec: CacheExportSpec
        let common = ["mode", "compression", "compression-level", "force-compression", "image-manifest", "oci-mediatypes",
                      "ignore-error", "cache-mounts"]
        switch type {
        case "local":
            try CacheSpecFields.allow(attrs, common + ["dest", "tag"], text, flag: "--cache-to")
            guard let dest = attrs["dest"], !dest.isEmpty else { throw SolveError("--cache-to \(text): type=local needs dest=DIR") }
            spec = CacheExportSpec(.local(directory: dest, tag: attrs["tag"] ?? "latest"))
        case "registry":
            try CacheSpecFields.allow(attrs, common + ["ref"], text, flag: "--cache-to")
            guard let ref = attrs["ref"], !ref.isEmpty else { throw SolveError("--cache-to \(text): type=registry needs ref=NAME") }
            spec = CacheExportSpec(.registry(reference: ref))
        case "inline":
            try CacheSpecFields.allow(attrs, ["mode", "ignore-error"], text, flag: "--cache-to")
            spec = CacheExportSpec(.inline)
            if attrs["mode"] == "max" {
                throw SolveError("--cache-to \(text): the inline cache holds the image's own layers only (mode=min); use type=registry or type=local for mode=max")
            }
        default:
            throw CacheSpecFields.unknownType(type, text, flag: "--cache-to", known: "local, registry or inline")
        }
        if let m = attrs["mode"] {
            guard let mode = CacheExportMode(rawValue: m) else { throw SolveError("--cache-to \(text): mode=\(m) (expected min or max)") }
            spec.mode = mode
        }
        if let c = attrs["compression"] {
            switch c {
            case "gzip": spec.compression = .gzip
            case "zstd": spec.compression = .zstd
            case "uncompressed": spec.compression = .none
            default: throw SolveError("--cache-to \(text): compression=\(c) (expected gzip, zstd or uncompressed)")
            }
        }
        if let l = attrs["compression-level"] {
            let range = spec.compression == .zstd ? 1...22 : 0...9
            guard spec.compression != .none, let n = Int(l), range.contains(n) else {
                throw SolveError("--cache-to \(text): compression-level=\(l) (0-9 for gzip, 1-22 for zstd)")
            }
            spec.level = n
        }
        if attrs["oci-mediatypes"] == "false" {
            throw SolveError("--cache-to \(text): oci-mediatypes=false is not supported: rbuild writes the cache with OCI media types")
        }
        spec.imageManifest = try CacheSpecFields.bool(attrs, "image-manifest", text)
        spec.cacheMounts = try CacheSpecFields.bool(attrs, "cache-mounts", text)
        spec.ignoreError = try CacheSpecFields.bool(attrs, "ignore-error", text)
        return spec
    }

    public var description: String {
        switch kind {
        case .local(let dir, _): return "type=local,dest=\(dir)"
        case .registry(let ref): return ref
        case .inline: return "type=inline"
        }
    }
}

enum CacheSpecFields {
    /// `type` and the other attributes; a value with no `=` is a registry reference.
    static func parse(_ text: String, flag: String) throws -> (String, [String: String]) {
        guard text.contains("=") else {
            guard !text.isEmpty else { throw SolveError("\(flag): empty value") }
            return ("registry", ["ref": text])
        }
        var attrs: [String: String] = [:]
        for field in splitOptionFields(text) {
            let kv = field.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw SolveError("\(flag) \(text): \"\(field)\" is not KEY=VALUE") }
            attrs[kv[0].lowercased()] = kv[1]
        }
        guard let type = attrs.removeValue(forKey: "type") else {
            throw SolveError("\(flag) \(text): no type= given")
        }
        return (type, attrs)
    }

    static func allow(_ attrs: [String: String], _ known: [String], _ text: String, flag: String) throws {
        for k in attrs.keys.sorted() where !known.contains(k) {
            throw SolveError("\(flag) \(text): unknown attribute \"\(k)\" (known here: \(known.joined(separator: ", ")))")
        }
    }

    static func bool(_ attrs: [String: String], _ key: String, _ text: String) throws -> Bool {
        switch attrs[key] {
        case nil, "false": return false
        case "true": return true
        case let v?: throw SolveError("--cache-to \(text): \(key)=\(v) (expected true or false)")
        }
    }

    static func unknownType(_ type: String, _ text: String, flag: String, known: String) -> SolveError {
        let remote = ["gha", "s3", "azblob"].contains(type)
        return SolveError("\(flag) \(text): type=\(type) is not supported\(remote ? " (it needs that service's API)" : "") — rbuild has \(known)")
    }
}
