import Foundation
import RBuildOCI
import RBuildRuntime
import RBuildSnapshots

/// An `-o` / `--output` value as docker buildx takes it: `type=oci,dest=out.tar`, or the
/// shorthands `DIR` (type=local,dest=DIR) and `-` (type=tar to stdout).
public struct OutputSpec: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case oci, docker, local, tar, image, registry
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
        for field in splitCSV(text) {
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
            throw ExportError("-o \(text): unknown type \"\(t)\" (expected oci, docker, local, tar, image or registry)")
        }
        let known: Set<String> = ["dest", "name", "tar", "compression", "compression-level", "force-compression",
                                  "rewrite-timestamp", "push", "oci-mediatypes", "unpack", "annotation", "store"]
        for k in attrs.keys where !known.contains(k) && !k.hasPrefix("annotation.") {
            throw ExportError("-o \(text): unknown attribute \"\(k)\"")
        }
        return OutputSpec(kind: kind, attributes: attrs)
    }

    /// Fields split on commas, with double quotes keeping commas inside a value (`"name=a,b"`).
    static func splitCSV(_ text: String) -> [String] {
        var out: [String] = [], cur = "", quoted = false
        for ch in text {
            if ch == "\"" { quoted.toggle(); continue }
            if ch == "," && !quoted { out.append(cur); cur = ""; continue }
            cur.append(ch)
        }
        out.append(cur)
        return out.filter { !$0.isEmpty }
    }

    public var destination: String? { attributes["dest"] }

    /// Names for the image: `name=` (comma-separated inside quotes) joined with the `-t` tags.
    public func names(tags: [String]) -> [String] {
        let own = attributes["name"].map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? []
        var seen = Set<String>()
        return (own + tags).filter { seen.insert($0).inserted }
    }

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

public struct ExportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ message: String) { description = message }
}

/// What the exporters are given: the image in the content store, its names, and (for the
/// outputs that write files) a way to get its root filesystem.
public struct ExportRequest {
    public var image: Descriptor
    public var names: [String]
    public var store: ImageStore
    public var mapping: IDMapping
    public var sourceDateEpoch: Int64?
    /// The root filesystem, made on demand (type=local and type=tar only).
    public var rootfs: () throws -> SnapshotView
    /// The image's manifest with its layers compressed so (builds make them uncompressed).
    public var compressed: (Compression, Int?) throws -> Descriptor

    public init(image: Descriptor, names: [String], store: ImageStore, mapping: IDMapping, sourceDateEpoch: Int64?,
                rootfs: @escaping () throws -> SnapshotView, compressed: @escaping (Compression, Int?) throws -> Descriptor) {
        self.image = image
        self.names = names
        self.store = store
        self.mapping = mapping
        self.sourceDateEpoch = sourceDateEpoch
        self.rootfs = rootfs
        self.compressed = compressed
    }
}

public enum Exporters {
    /// Writes one output; returns a line for the progress display and the manifest written
    /// (type=local and type=tar: the image's).
    public static func export(_ spec: OutputSpec, _ request: ExportRequest) throws -> (summary: String, image: Descriptor) {
        let names = try spec.names(tags: request.names).map(ImageStore.normalise)
        switch spec.kind {
        case .image:
            if spec.attributes["push"] == "true" {
                throw ExportError("type=image,push=true: pushing to a registry is not implemented yet")
            }
            guard !names.isEmpty else { throw ExportError("type=image needs a name: -t NAME or name=NAME") }
            // The local store keeps layers as built (uncompressed) unless compression= asks.
            let image = try spec.compression().map { try request.compressed($0.0, $0.1) } ?? request.image
            for n in names { try request.store.tag(n, image) }
            return ("naming to " + names.joined(separator: ", "), image)
        case .registry:
            throw ExportError("type=registry: pushing to a registry is not implemented yet")
        case .oci, .docker:
            let dest = try destination(spec)
            let asDirectory = spec.attributes["tar"] == "false"
            if spec.kind == .docker && asDirectory { throw ExportError("type=docker has no tar=false form") }
            if asDirectory && dest == "-" { throw ExportError("type=oci,tar=false needs a directory as dest") }
            let file = dest == "-" ? try stdoutStaging(request) : dest
            let (compression, level) = try spec.compression() ?? (.gzip, nil)
            let image = try request.compressed(compression, level)
            try atomically(file, isDirectory: asDirectory) { tmp in
                let t: ExportTarget = spec.kind == .docker ? .dockerArchive(tmp) : asDirectory ? .ociLayout(tmp) : .ociArchive(tmp)
                try request.store.export(image, name: names.first, to: t, sourceDateEpoch: request.sourceDateEpoch)
            }
            if dest == "-" { try streamToStdout(file) }
            return ("exporting to \(dest == "-" ? "stdout" : dest)", image)
        case .local:
            let dest = try destination(spec)
            guard dest != "-" else { throw ExportError("type=local needs a directory as dest") }
            try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
            try copyRoot(try request.rootfs(), into: dest, mapping: request.mapping)
            return ("copying files to \(dest)", request.image)
        case .tar:
            let dest = try destination(spec)
            let file = dest == "-" ? try stdoutStaging(request) : dest
            try atomically(file, isDirectory: false) { tmp in
                try writeRootTar(try request.rootfs(), to: tmp, request: request)
            }
            if dest == "-" { try streamToStdout(file) }
            return ("sending tarball to \(dest == "-" ? "stdout" : dest)", request.image)
        }
    }

    static func destination(_ spec: OutputSpec) throws -> String {
        guard let d = spec.destination, !d.isEmpty else {
            throw ExportError("type=\(spec.kind.rawValue) needs dest=PATH")
        }
        return d
    }

    /// A file beside nothing in particular that stands in for stdout.
    static func stdoutStaging(_ request: ExportRequest) throws -> String {
        try FileManager.default.createDirectory(atPath: request.store.root + "/tmp", withIntermediateDirectories: true)
        return request.store.root + "/tmp/stdout-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).tar"
    }

    static func streamToStdout(_ file: String) throws {
        defer { unlink(file) }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ExportError("cannot read \(file)") }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var off = 0
            while off < n {
                let w = buf.withUnsafeBytes { write(1, $0.baseAddress! + off, n - off) }
                if w < 0 && errno == EINTR { continue }
                guard w > 0 else { throw ExportError("writing to stdout failed: \(String(cString: strerror(errno)))") }
                off += w
            }
        }
    }

    /// Writes `final` through a temporary sibling renamed into place: an output appears whole
    /// or not at all (an existing directory output is replaced).
    static func atomically(_ final: String, isDirectory: Bool, _ body: (String) throws -> Void) throws {
        let parent = (final as NSString).deletingLastPathComponent
        let base = (final as NSString).lastPathComponent
        let tmp = (parent.isEmpty ? "." : parent) + "/.\(base).rbuild-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try body(tmp)
            if isDirectory, FileManager.default.fileExists(atPath: final) {
                try FileManager.default.removeItem(atPath: final)
            }
            guard rename(tmp, final) == 0 else {
                throw ExportError("cannot move the output into \(final): \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
    }

    /// type=local: the root's files into `dest` (owned by the invoking user, as buildx does
    /// rootless; device nodes are skipped).
    static func copyRoot(_ view: SnapshotView, into dest: String, mapping: IDMapping) throws {
        let fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ExportError("cannot open \(dest): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var copier = ViewCopier(view: view, mapping: mapping, destRoot: fd)
        let root = try view.root()
        for e in try view.entries(root) {
            try copier.copy(e, in: root, srcRel: e.name, to: fd, name: e.name, destRel: e.name)
        }
    }

    /// type=tar: the root filesystem as one tar, owners as the image records them.
    static func writeRootTar(_ view: SnapshotView, to file: String, request: ExportRequest) throws {
        let tmp = request.store.root + "/tmp/rootfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ExportError("cannot open \(tmp)") }
        defer { close(fd) }
        var copier = ViewCopier(view: view, mapping: request.mapping, destRoot: fd)
        let root = try view.root()
        for e in try view.entries(root) {
            try copier.copy(e, in: root, srcRel: e.name, to: fd, name: e.name, destRel: e.name)
        }
        var options = LayerOptions(compression: .none, sourceDateEpoch: request.sourceDateEpoch)
        options.owners = copier.owners
        let layer = try writeLayer(fromDirectory: tmp, store: request.store.content, options: options)
        // A copy, never a hard link: the output must not share an inode with the store's blob.
        try FileManager.default.copyItem(atPath: request.store.content.path(layer.descriptor.digest), toPath: file)
    }
}
