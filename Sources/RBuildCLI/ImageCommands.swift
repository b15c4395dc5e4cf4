import ArgumentParser
import Foundation
import RBuild

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "import", abstract: "Make a local image from a root filesystem directory or tarball.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "The platform of the files (default: the host's). Importing another platform under the same name makes the image multi-platform.")
    var platform: String?

    @Option(name: .long, help: "Layer compression: gzip (default), zstd or none.")
    var compression: String = "gzip"

    @Argument(help: "The root filesystem: a directory or a tarball (plain, gzip or zstd).")
    var rootfs: String

    @Argument(help: "The image name, e.g. busybox:1.35.")
    var name: String

    func run() throws {
        let store = try StateDirectory.open(global.root)
        let p = try platform.map(Platform.init(parsing:)) ?? Platform.host
        guard let c = Compression(rawValue: compression) else {
            throw OCIError(.invalidArgument, "--compression \(compression): expected gzip, zstd or none")
        }
        let m = try store.importRootfs(rootfs, platform: p, options: LayerOptions(compression: c))
        let d = try store.add(platformManifest: m, as: name)
        print("\(try ImageStore.normalise(name)) \(p) \(m.digest) (image \(d.digest))")
    }
}

struct ImagesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "images", abstract: "List local images.")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let store = try StateDirectory.open(global.root)
        print("NAME".padding(toLength: 40, withPad: " ", startingAt: 0) + "  DIGEST" + String(repeating: " ", count: 65) + "  PLATFORMS")
        for (name, d) in try store.list() {
            let platforms = (try? store.platformManifests(of: d))?.compactMap { $0.platform?.description }.joined(separator: ",") ?? "?"
            print(name.padding(toLength: 40, withPad: " ", startingAt: 0) + "  \(d.digest)  \(platforms)")
        }
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show an image's manifest and config as JSON.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Which platform of a multi-platform image.")
    var platform: String?

    @Argument var name: String

    func run() throws {
        let store = try StateDirectory.open(global.root)
        let full = try ImageStore.normalise(name)
        guard let d = try store.lookup(full) else { throw OCIError(.notFound, "no such image: \(full) (see `rbuild images`)") }
        let (m, manifest) = try store.manifest(of: d, platform: try platform.map(Platform.init(parsing:)))
        let config = try store.config(of: manifest)
        struct Out: Encodable {
            var name: String
            var digest: Digest
            var manifestDigest: Digest
            var platform: Platform?
            var manifest: Manifest
            var config: ImageConfig
        }
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try e.encode(Out(name: full, digest: d.digest, manifestDigest: m.digest, platform: m.platform, manifest: manifest, config: config)), as: UTF8.self))
    }
}

struct SaveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "save", abstract: "Export an image: -o type=oci|docker,dest=PATH[,tar=false].")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Only this platform of a multi-platform image.")
    var platform: String?

    @Option(name: .shortAndLong, help: "type=oci|docker,dest=PATH[,tar=false]")
    var output: String

    @Argument var name: String

    func run() throws {
        // The same -o syntax as rbuild build (one parser), for the two image outputs.
        let spec = try OutputSpec.parse(output)
        guard let dest = spec.destination else { throw OCIError(.invalidArgument, "-o \(output): missing dest=PATH") }
        let tar = spec.attributes["tar"] != "false"
        let target: ExportTarget
        switch spec.kind {
        case .oci: target = tar ? .ociArchive(dest) : .ociLayout(dest)
        case .docker:
            guard tar else { throw OCIError(.invalidArgument, "type=docker is always an archive (tar=false is for type=oci)") }
            target = .dockerArchive(dest)
        default: throw OCIError(.invalidArgument, "-o \(output): type must be oci or docker")
        }
        let store = try StateDirectory.open(global.root)
        try store.save(name, platform: try platform.map(Platform.init(parsing:)), to: target)
    }
}

struct RmiCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rmi", abstract: "Remove a local image name (blobs go with `rbuild prune`).")

    @OptionGroup var global: GlobalOptions

    @Argument var names: [String]

    func run() throws {
        let store = try StateDirectory.open(global.root)
        for n in names {
            try store.remove(n)
            print("Untagged: \(try ImageStore.normalise(n))")
        }
    }
}

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Delete blobs that no local image (and, unless --all, no cached build step) uses.")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Forget the build cache too, delete its layers, every unpacked snapshot and the fetched git repositories (not while a build runs).")
    var all = false

    @Flag(name: .long, help: "First re-hash every blob and remove the corrupt ones (`rbuild check --repair`).")
    var verify = false

    @Option(name: .long, help: "type=exec.cachemount: remove only the directories of RUN --mount=type=cache (those no build is using).")
    var filter: [String] = []

    func run() throws {
        var scope: PruneScope = all ? .all : .unused
        for f in filter {
            guard f.replacingOccurrences(of: " ", with: "") == "type=exec.cachemount" else {
                throw ValidationError("--filter \(f): only type=exec.cachemount is supported")
            }
            scope = .cacheMounts
        }
        let result = try StateDirectory.open(global.root).prune(scope, verify: verify)
        if let check = result.check { render(check) }
        if result.sweptDirectories > 0 { print("Removed \(result.sweptDirectories) leftover or unpacked snapshot directories") }
        if scope != .unused {
            print("Deleted \(result.cacheMounts) cache mounts, \(ByteCountFormatter.string(fromByteCount: result.cacheMountBytes, countStyle: .binary)) reclaimed")
        }
        if scope != .cacheMounts {
            print("Deleted \(result.blobs) blobs, \(ByteCountFormatter.string(fromByteCount: result.bytes, countStyle: .binary)) reclaimed")
        }
    }
}

struct DuCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "du", abstract: "Show what the state dir holds: cache mounts, snapshots, git repositories, blobs.")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let usage = try StateDirectory.open(global.root).diskUsage()
        print("TYPE".padding(toLength: 17, withPad: " ", startingAt: 0) + "ID".padding(toLength: 41, withPad: " ", startingAt: 0) + "SIZE")
        var total: Int64 = 0
        for item in usage.items {
            total += item.bytes
            let name = item.name.count > 40 ? String(item.name.prefix(37)) + "..." : item.name
            print(item.kind.padding(toLength: 17, withPad: " ", startingAt: 0) + name.padding(toLength: 41, withPad: " ", startingAt: 0)
                  + ByteCountFormatter.string(fromByteCount: item.bytes, countStyle: .binary))
        }
        print("Total: \(ByteCountFormatter.string(fromByteCount: total, countStyle: .binary))")
    }
}

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Re-hash every blob in the store and report the corrupt ones; exits 1 when there are any (unless --repair).")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Remove the corrupt blobs: the images that use them then say they are incomplete (pull, import or build them again).")
    var repair = false

    func run() throws {
        let store = try StateDirectory.open(global.root)
        let report = try store.check(repair: repair)
        render(report)
        if !report.bad.isEmpty && !repair {
            throw OCIError(.corruptBlob, "\(report.bad.count) corrupt blob\(report.bad.count == 1 ? "" : "s") in \(store.root): run `rbuild check --repair`, then pull, import or build the images that used \(report.bad.count == 1 ? "it" : "them") again")
        }
    }
}

/// One line per bad blob, then a summary (`check` and `prune --verify`).
func render(_ report: StoreCheck) {
    for b in report.bad {
        let used = b.images.isEmpty ? "" : ", used by " + b.images.joined(separator: ", ")
        print("corrupt \(b.digest): actual \(b.actual.map(\.description) ?? "unreadable"), \(b.size) bytes\(used)\(b.removed ? " (removed)" : "")")
    }
    let removed = report.bad.filter(\.removed).count
    print("Checked \(report.checked) blobs: \(report.bad.isEmpty ? "all good" : "\(report.bad.count) corrupt")\(removed > 0 ? ", \(removed) removed" : "")")
    fflush(nil)   // stdout (print buffers it) before an error line on stderr
}

struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "load", abstract: "Load an OCI layout directory, OCI archive or Docker archive.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "PATH[:TAG]: TAG picks the image by its ref name (OCI) or repo tag (Docker).")
    var source: String

    @Argument(help: "The local name (default: the image's own ref name).")
    var name: String?

    @Option(name: .customLong("max-layer-size"), help: "The most bytes one image layer may unpack to, e.g. 64GiB (the default), 512m; also RBUILD_MAX_LAYER_SIZE.")
    var maxLayerSize: String?

    func run() throws {
        var path = source
        var tag: String?
        if !FileManager.default.fileExists(atPath: source), let colon = source.lastIndex(of: ":") {
            path = String(source[..<colon])
            tag = String(source[source.index(after: colon)...])
        }
        let store = try StateDirectory.open(global.root)
        let (n, d) = try store.load(path: path, tag: tag, name: name, maxLayerSize: try MaxLayerSize.resolve(flag: maxLayerSize))
        print("Loaded \(n) (\(d.digest))")
    }
}
