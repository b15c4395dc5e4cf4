import Foundation
import RBuildOCI

/// `type=oci`: an OCI image layout, as a tar archive (or a directory with `tar=false`), named by
/// its first name in the layout's ref annotation; several platforms make an index.
public struct OCIExporter: Exporter {
    /// A path, or `-` for stdout (archives only).
    public var dest: String
    /// false: a layout directory instead of an archive.
    public var tar: Bool
    public var names: [String]
    /// The layers' compression (`.none`: uncompressed) and its level (nil: the default).
    public var compression: Compression
    public var level: Int?

    public init(dest: String, tar: Bool = true, names: [String] = [], compression: Compression = .gzip, level: Int? = nil) {
        self.dest = dest
        self.tar = tar
        self.names = names
        self.compression = compression
        self.level = level
    }

    public var title: String { "exporting to oci image format" }

    public func export(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult {
        try writeImage(request, kind: "oci", dest: dest, names: names, compression: compression, level: level, isDirectory: !tar,
                       check: { if !tar && $0 == "-" { throw ExportError("type=oci,tar=false needs a directory as dest") } },
                       target: { tar ? .ociArchive($0) : .ociLayout($0) })
    }
}

/// `type=docker`: a `docker load` archive of one platform, its first name in RepoTags.
public struct DockerExporter: Exporter {
    /// A path, or `-` for stdout.
    public var dest: String
    public var names: [String]
    public var compression: Compression
    public var level: Int?

    public init(dest: String, names: [String] = [], compression: Compression = .gzip, level: Int? = nil) {
        self.dest = dest
        self.names = names
        self.compression = compression
        self.level = level
    }

    public var title: String { "exporting to docker image format" }

    public func export(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult {
        if dest.isEmpty { return try load(request, progress: progress) }
        return try writeImage(request, kind: "docker", dest: dest, names: names, compression: compression, level: level, isDirectory: false,
                       check: { _ in
                           if request.images.count > 1 {
                               throw ExportError("docker exporter does not currently support exporting manifest lists: type=docker holds one platform; build one platform, or use type=oci")
                           }
                       },
                       target: { .dockerArchive($0) }, attestations: false)
    }
}

/// The image, its layers compressed so, written to `dest` (`-`: stdout) as `target` says, named
/// by its first name; `check` sees the destination before anything is written.
func writeImage(_ request: ExportRequest, kind: String, dest: String, names: [String], compression: Compression, level: Int?,
                isDirectory: Bool, check: (String) throws -> Void, target: (String) -> ExportTarget,
                attestations: Bool = true) throws -> ExportResult {
    let names = try request.names(names)
    let dest = try requireDestination(dest, kind)
    try check(dest)
    let image = try request.image(compression: compression, level: level, attestations: attestations)
    try request.output(to: dest, isDirectory: isDirectory) { tmp in
        try request.store.export(image, name: names.normalised.first, to: target(tmp), sourceDateEpoch: request.sourceDateEpoch)
    }
    return ExportResult(descriptor: image, summary: "exporting to \(dest == "-" ? "stdout" : dest)", names: names.given)
}

extension DockerExporter {
    /// The program `type=docker` without dest= (`--load`) hands its archive to: `docker`, else
    /// `podman`, the first on PATH.
    public static func loader() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for name in ["docker", "podman"] {
            for dir in path.split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
        }
        throw ExportError("--load (type=docker without dest=) hands the image to `docker load` or `podman load`, and neither docker nor podman is on PATH: install one, or write an archive with -o type=docker,dest=FILE")
    }

    /// `--load`: the Docker archive written to a temp file in the state dir, then `LOADER load -i FILE`.
    func load(_ request: ExportRequest, progress: @escaping @Sendable (String) -> Void) throws -> ExportResult {
        let loader = try DockerExporter.loader()
        let file = try request.stdoutStaging()
        defer { unlink(file) }
        var result = try writeImage(request, kind: "docker", dest: file, names: names, compression: compression, level: level,
                                    isDirectory: false, check: { _ in
                                        if request.images.count > 1 {
                                            throw ExportError("--load: docker load takes one platform; build one platform, or push a multi-platform image")
                                        }
                                    }, target: { .dockerArchive($0) })
        let p = Process()
        p.executableURL = URL(fileURLWithPath: loader)
        p.arguments = ["load", "-i", file]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        for line in text.split(separator: "\n") { progress(String(line)) }
        guard p.terminationReason == .exit && p.terminationStatus == 0 else {
            throw ExportError("\(loader) load failed (status \(p.terminationStatus)): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        result.summary = "loading image into \((loader as NSString).lastPathComponent)"
        return result
    }
}
