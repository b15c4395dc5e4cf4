import Foundation
import RBuildOCI
import RBuildSystem
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

/// One platform's image as the exporters see it.
public struct ExportImage {
    /// Its manifest (layers as built), with its platform.
    public var manifest: Descriptor
    /// The root filesystem, made on demand (type=local and type=tar only).
    public var rootfs: () throws -> SnapshotView
    /// The manifest with its layers compressed so (builds make them uncompressed).
    public var compressed: (Compression, Int?) throws -> Descriptor

    public init(manifest: Descriptor, rootfs: @escaping () throws -> SnapshotView,
                compressed: @escaping (Compression, Int?) throws -> Descriptor) {
        self.manifest = manifest
        self.rootfs = rootfs
        self.compressed = compressed
    }

    /// buildx's directory name for a platform in multi-platform local and tar outputs: linux_arm_v7.
    public var directoryName: String {
        (manifest.platform?.description ?? "unknown").replacingOccurrences(of: "/", with: "_")
    }
}

/// What the exporters are given: the image of each platform built, their names, the store.
public struct ExportRequest {
    public var images: [ExportImage]
    public var names: [String]
    public var store: ImageStore
    public var mapping: IDMapping
    public var sourceDateEpoch: Int64?
    /// Pushes an image (in `store`) to a registry under a name (type=registry, push=true).
    public var push: ((Descriptor, String) throws -> Void)?

    public init(images: [ExportImage], names: [String], store: ImageStore, mapping: IDMapping, sourceDateEpoch: Int64?,
                push: ((Descriptor, String) throws -> Void)? = nil) {
        self.images = images
        self.names = names
        self.store = store
        self.mapping = mapping
        self.sourceDateEpoch = sourceDateEpoch
        self.push = push
    }

    /// The image to write: the one manifest, or an OCI index of every platform's, each with its
    /// layers compressed as asked (nil: as built).
    func top(_ compression: (Compression, Int?)?) throws -> Descriptor {
        let manifests = try images.map { i in try compression.map { try i.compressed($0.0, $0.1) } ?? i.manifest }
        if manifests.count == 1 { return manifests[0] }
        let index = Index(mediaType: MediaType.ociIndex, manifests: manifests)
        let bytes = try canonicalJSON(index)
        let d = try store.content.put(bytes)
        return Descriptor(mediaType: MediaType.ociIndex, digest: d, size: Int64(bytes.count))
    }
}

public enum Exporters {
    /// Writes one output; returns a line for the progress display and the manifest written
    /// (type=local and type=tar: the image's).
    public static func export(_ spec: OutputSpec, _ request: ExportRequest) throws -> (summary: String, image: Descriptor) {
        let names = try spec.names(tags: request.names).map(ImageStore.normalise)
        switch spec.kind {
        case .image:
            guard !names.isEmpty else { throw ExportError("type=image needs a name: -t NAME or name=NAME") }
            // The local store keeps layers as built (uncompressed) unless compression= asks.
            let image = try request.top(try spec.compression())
            for n in names { try request.store.tag(n, image) }
            if spec.attributes["push"] == "true" {
                _ = try pushAll(spec, request, names)
                return ("naming to " + names.joined(separator: ", ") + ", pushed", image)
            }
            return ("naming to " + names.joined(separator: ", "), image)
        case .registry:
            guard !names.isEmpty else { throw ExportError("type=registry needs a name: -t NAME or name=NAME") }
            let image = try pushAll(spec, request, names)
            return ("pushed " + names.joined(separator: ", "), image)
        case .oci, .docker:
            let dest = try destination(spec)
            let asDirectory = spec.attributes["tar"] == "false"
            if spec.kind == .docker && asDirectory { throw ExportError("type=docker has no tar=false form") }
            if asDirectory && dest == "-" { throw ExportError("type=oci,tar=false needs a directory as dest") }
            if spec.kind == .docker && request.images.count > 1 {
                throw ExportError("docker exporter does not currently support exporting manifest lists: type=docker holds one platform; build one platform, or use type=oci")
            }
            let file = dest == "-" ? try stdoutStaging(request) : dest
            let image = try request.top(try spec.compression() ?? (.gzip, nil))
            try replaceAtomically(file, isDirectory: asDirectory) { tmp in
                let t: ExportTarget = spec.kind == .docker ? .dockerArchive(tmp) : asDirectory ? .ociLayout(tmp) : .ociArchive(tmp)
                try request.store.export(image, name: names.first, to: t, sourceDateEpoch: request.sourceDateEpoch)
            }
            if dest == "-" { try streamToStdout(file) }
            return ("exporting to \(dest == "-" ? "stdout" : dest)", image)
        case .local:
            let dest = try destination(spec)
            guard dest != "-" else { throw ExportError("type=local needs a directory as dest") }
            // Several platforms: one directory each (linux_amd64/, linux_arm64/), as buildx does.
            for i in request.images {
                let dir = request.images.count == 1 ? dest : dest + "/" + i.directoryName
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try copyRoot(try i.rootfs(), into: dir, mapping: request.mapping)
            }
            return ("copying files to \(dest)", try request.top(nil))
        case .tar:
            let dest = try destination(spec)
            let file = dest == "-" ? try stdoutStaging(request) : dest
            try replaceAtomically(file, isDirectory: false) { tmp in
                try writeRootTar(request, to: tmp)
            }
            if dest == "-" { try streamToStdout(file) }
            return ("sending tarball to \(dest == "-" ? "stdout" : dest)", try request.top(nil))
        }
    }

    /// Pushes the image, its layers gzip-compressed unless compression= says otherwise.
    static func pushAll(_ spec: OutputSpec, _ request: ExportRequest, _ names: [String]) throws -> Descriptor {
        guard let push = request.push else { throw ExportError("this build cannot push (no registry client)") }
        let image = try request.top(try spec.compression() ?? (.gzip, nil))
        for n in names { try push(image, n) }
        return image
    }

    static func destination(_ spec: OutputSpec) throws -> String {
        guard let d = spec.destination, !d.isEmpty else {
            throw ExportError("type=\(spec.kind.rawValue) needs dest=PATH")
        }
        return d
    }

    /// A file beside nothing in particular that stands in for stdout.
    static func stdoutStaging(_ request: ExportRequest) throws -> String {
        try FileManager.default.createDirectory(atPath: request.store.layout.tmp, withIntermediateDirectories: true)
        return request.store.layout.tmp + "/stdout-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).tar"
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

    /// type=local: the root's files into `dest` (owned by the invoking user, as buildx does
    /// rootless; device nodes are skipped).
    static func copyRoot(_ view: SnapshotView, into dest: String, mapping: IDMapping) throws {
        let fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ExportError("cannot open \(dest): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        _ = try copyView(view, into: fd, prefix: "", root: fd, mapping: mapping)
    }

    /// Copies a whole view into `dirfd` (`prefix` relative to `root`); returns the owners the
    /// copied entries had (paths relative to `root`).
    static func copyView(_ view: SnapshotView, into dirfd: Int32, prefix: String, root: Int32,
                         mapping: IDMapping) throws -> [String: (uid: UInt32, gid: UInt32)] {
        var copier = ViewCopier(view: view, mapping: mapping, destRoot: root)
        let top = try view.root()
        for e in try view.entries(top) {
            try copier.copy(e, in: top, srcRel: e.name, to: dirfd, name: e.name, destRel: prefix.isEmpty ? e.name : prefix + "/" + e.name)
        }
        return copier.owners
    }

    /// type=tar: the root filesystem as one tar, owners as the image records them (several
    /// platforms: a directory per platform inside it).
    static func writeRootTar(_ request: ExportRequest, to file: String) throws {
        let tmp = request.store.layout.tmp + "/rootfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ExportError("cannot open \(tmp)") }
        defer { close(fd) }
        var owners: [String: (uid: UInt32, gid: UInt32)] = [:]
        for i in request.images {
            let prefix = request.images.count == 1 ? "" : i.directoryName
            var dirfd = fd
            if !prefix.isEmpty {
                mkdirat(fd, prefix, 0o755)
                dirfd = openat(fd, prefix, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard dirfd >= 0 else { throw ExportError("cannot create \(tmp)/\(prefix)") }
            }
            defer { if dirfd != fd { close(dirfd) } }
            for (k, v) in try copyView(try i.rootfs(), into: dirfd, prefix: prefix, root: fd, mapping: request.mapping) {
                owners[k] = v
            }
        }
        var options = LayerOptions(compression: .none, sourceDateEpoch: request.sourceDateEpoch)
        options.owners = owners
        let layer = try writeLayer(fromDirectory: tmp, store: request.store.content, options: options)
        // A copy, never a hard link: the output must not share an inode with the store's blob.
        try request.store.content.copy(request.store.content.blob(layer.descriptor), to: file)
    }
}
