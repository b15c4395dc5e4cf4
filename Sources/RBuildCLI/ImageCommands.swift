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

    @Flag(name: .long, help: "Show the image's attestations instead (provenance and SBOM, by platform and predicate type), as JSON.")
    var attestations = false

    @Argument var name: String

    func run() throws {
        let store = try StateDirectory.open(global.root)
        let full = try ImageStore.normalise(name)
        guard let d = try store.lookup(full) else { throw OCIError(.notFound, "no such image: \(full) (see `rbuild images`)") }
        if attestations {
            print(String(decoding: try attestationsJSON(of: d, store: store), as: UTF8.self))
            return
        }
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
    static let configuration = CommandConfiguration(commandName: "save", abstract: "Export an image: -o type=oci|docker,dest=PATH[,tar=false][,compression=gzip|zstd|uncompressed].")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Only this platform of a multi-platform image.")
    var platform: String?

    @Option(name: .shortAndLong, help: "type=oci|docker,dest=PATH[,tar=false][,compression=gzip|zstd|uncompressed][,compression-level=N] (layers gzip by default)")
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
        let compression = try spec.compression()
        let store = try StateDirectory.open(global.root)
        try store.save(name, platform: try platform.map(Platform.init(parsing:)), to: target,
                       compression: compression?.0 ?? .gzip, level: compression?.1)
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
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Delete blobs that no local image (and, unless --all, no cached build step) uses; with --filter or --keep-storage, the build cache records they select.")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Forget the build cache too, delete its layers, every unpacked snapshot and the fetched git repositories (not while a build runs).")
    var all = false

    @Flag(name: .long, help: "First re-hash every blob and remove the corrupt ones (`rbuild check --repair`).")
    var verify = false

    @Option(name: .long, help: "Select what to remove (repeatable): until=DURATION (not used for that long, e.g. 24h, 2h30m), type=regular|exec.cachemount|snapshots, id=PREFIX.")
    var filter: [String] = []

    @Option(name: .customLong("keep-storage"), help: "Remove the least recently used build cache records (of those --filter selects) until the build cache holds at most SIZE (e.g. 10GB, 512m).")
    var keepStorage: String?

    func run() throws {
        let store = try StateDirectory.open(global.root)
        let size = try keepStorage.map { text in
            guard let n = byteSize(text) else { throw ValidationError("--keep-storage \(text): expected a size such as 10GB or 512m") }
            return n
        }
        let selective = !filter.isEmpty || size != nil
        if selective && all { throw ValidationError("--all removes the whole build cache: give it without --filter and --keep-storage") }
        let result: PruneResult
        if selective {
            if verify { render(try store.check(repair: true)) }
            result = try store.prune(filter: try UsageFilter.parse(filter), keepStorage: size)
            print("Deleted \(result.steps) cached steps (\(bytesText(result.stepBytes)) of layers)")
            print("Deleted \(result.cacheMounts) cache mounts, \(bytesText(result.cacheMountBytes)) reclaimed")
        } else {
            result = try store.prune(all ? .all : .unused, verify: verify)
            if let check = result.check { render(check) }
            if all { print("Deleted \(result.cacheMounts) cache mounts, \(bytesText(result.cacheMountBytes)) reclaimed") }
        }
        if result.sweptDirectories > 0 { print("Removed \(result.sweptDirectories) leftover or unpacked snapshot directories") }
        print("Deleted \(result.blobs) blobs, \(bytesText(result.bytes)) reclaimed")
    }
}

func bytesText(_ n: Int64) -> String { ByteCountFormatter.string(fromByteCount: n, countStyle: .binary) }

struct DuCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "du",
        abstract: "Show what the state dir holds: cached steps (regular), cache mounts, snapshots, git repositories, blobs — per kind and per record.")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Every record in full: id, type, size, created, last used, description.")
    var verbose = false

    @Option(name: .long, help: "As prune's: until=DURATION, type=regular|exec.cachemount|snapshots, id=PREFIX (repeatable).")
    var filter: [String] = []

    func run() throws {
        let usage = try StateDirectory.open(global.root).diskUsage()
        let f = try UsageFilter.parse(filter)
        let items = f.isEmpty ? usage.items : usage.filtered(f)
        if verbose {
            for item in items {
                var rows: [(String, String)] = [("ID", item.name.isEmpty ? "-" : item.name), ("Type", item.kind), ("Size", bytesText(item.bytes))]
                if let c = item.created { rows.append(("Created at", timeText(c))) }
                if let u = item.lastUsed { rows.append(("Last used", timeText(u))) }
                if !item.description.isEmpty { rows.append(("Description", item.description)) }
                for (k, v) in rows { print((k + ":").padding(toLength: 14, withPad: " ", startingAt: 0) + v) }
                print("")
            }
        } else {
            print("TYPE".padding(toLength: 17, withPad: " ", startingAt: 0) + "ID".padding(toLength: 41, withPad: " ", startingAt: 0)
                  + "SIZE".padding(toLength: 12, withPad: " ", startingAt: 0) + "LAST USED")
            for item in items {
                let id = item.kind == "regular" ? String(item.name.prefix(12)) : item.name
                let name = id.count > 40 ? String(id.prefix(37)) + "..." : id
                print(item.kind.padding(toLength: 17, withPad: " ", startingAt: 0) + name.padding(toLength: 41, withPad: " ", startingAt: 0)
                      + bytesText(item.bytes).padding(toLength: 12, withPad: " ", startingAt: 0) + (item.lastUsed.map(timeText) ?? "-"))
            }
        }
        var kinds: [String] = []
        for item in items where !kinds.contains(item.kind) { kinds.append(item.kind) }
        for k in kinds {
            let of = items.filter { $0.kind == k }
            print("\(k): \(of.count) record\(of.count == 1 ? "" : "s"), \(bytesText(of.reduce(0) { $0 + $1.bytes }))")
        }
        // Blobs hold the cached steps' layers too: the total counts them once.
        let total = items.filter { $0.kind != "regular" || !items.contains { $0.kind == "blobs" } }.reduce(0) { $0 + $1.bytes }
        print("Total: \(bytesText(total))")
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
        let what = b.actual.map { "actual \($0)" } ?? (b.keptAsSnapshot ? b.problem : "actual unreadable")
        print("corrupt \(b.digest): \(what), \(b.size) bytes\(used)\(b.removed ? " (removed)" : "")")
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

struct TagCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tag", abstract: "Give a local image another name (docker tag).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A local image.")
    var source: String

    @Argument(help: "Its new name.")
    var target: String

    func run() throws {
        try StateDirectory.open(global.root).tag(source, as: target)
    }
}
