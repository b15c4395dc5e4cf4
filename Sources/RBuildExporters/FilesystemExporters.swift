import Foundation
import RBuildAttest
import RBuildOCI
import RBuildSystem
import RBuildSnapshots

/// `type=local`: the root filesystem's files into a directory, owned by the invoking user as
/// buildx does rootless (device nodes are skipped); several platforms: a directory each
/// (linux_amd64/, linux_arm64/).
public struct LocalExporter: Exporter {
    public var dest: String
    /// Names for the build result's metadata; nothing is named.
    public var names: [String]

    public init(dest: String, names: [String] = []) {
        self.dest = dest
        self.names = names
    }

    public var title: String { "copying files" }

    public func export(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult {
        let names = try request.names(self.names)
        let dest = try requireDestination(dest, "local")
        guard dest != "-" else { throw ExportError("type=local needs a directory as dest") }
        for i in request.images {
            let dir = request.images.count == 1 ? dest : dest + "/" + i.directoryName
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else { throw ExportError("cannot open \(dir): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            _ = try copyView(try i.rootfs(), into: fd, prefix: "", root: fd, mapping: request.mapping)
            try writeAttestationFiles(i, names: request.names, into: fd)
        }
        return ExportResult(descriptor: try request.image(compression: nil), summary: "copying files to \(dest)", names: names.given)
    }
}

/// `type=tar`: the root filesystem as one tar (a path, or `-` for stdout), owners as the image
/// records them; several platforms: a directory per platform inside it.
public struct TarExporter: Exporter {
    public var dest: String
    /// Names for the build result's metadata; nothing is named.
    public var names: [String]

    public init(dest: String, names: [String] = []) {
        self.dest = dest
        self.names = names
    }

    public var title: String { "sending tarball" }

    public func export(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult {
        let names = try request.names(self.names)
        let dest = try requireDestination(dest, "tar")
        try request.output(to: dest, isDirectory: false) { tmp in
            try writeRootTar(request, to: tmp)
        }
        return ExportResult(descriptor: try request.image(compression: nil),
                            summary: "sending tarball to \(dest == "-" ? "stdout" : dest)", names: names.given)
    }

    func writeRootTar(_ request: ExportRequest, to file: String) throws {
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
            try writeAttestationFiles(i, names: request.names, into: dirfd)
        }
        var options = LayerOptions(compression: .none, sourceDateEpoch: request.sourceDateEpoch)
        options.owners = owners
        let layer = try writeLayer(fromDirectory: tmp, store: request.store.content, options: options)
        // A copy, never a hard link: the output must not share an inode with the store's blob.
        try request.store.content.copy(request.store.content.blob(layer.descriptor), to: file)
    }
}

/// Copies a whole view into `dirfd` (`prefix` relative to `root`); returns the owners the
/// copied entries had (paths relative to `root`).
func copyView(_ view: SnapshotView, into dirfd: Int32, prefix: String, root: Int32,
              mapping: IDMapping) throws -> [String: (uid: UInt32, gid: UInt32)] {
    var copier = ViewCopier(view: view, mapping: mapping, destRoot: root)
    let top = try view.root()
    for e in try view.entries(top) {
        try copier.copy(e, in: top, srcRel: e.name, to: dirfd, name: e.name, destRel: prefix.isEmpty ? e.name : prefix + "/" + e.name)
    }
    return copier.owners
}

/// A local or tar output's attestations: each in-toto statement as a file beside the root's
/// files (`provenance.json`, `sbom.spdx.json`), as BuildKit writes them; an image file of that
/// name is replaced.
func writeAttestationFiles(_ image: ExportImage, names: [String], into dirfd: Int32) throws {
    for a in image.attestations {
        let bytes = try AttestationManifest.statement(a, subject: image.manifest, subjectName: names.first ?? "image")
        let name = AttestationManifest.fileName(a.predicateType)
        unlinkat(dirfd, name, 0)
        let fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ExportError("cannot write the attestation \(name): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try writeAll(fd, bytes)
    }
}
