import ArgumentParser
import Foundation
import RBuild

/// `rbuild imagetools`: as `docker buildx imagetools`, for images in registries.
struct ImagetoolsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imagetools", abstract: "Make and read multi-platform images in registries.",
        subcommands: [ImagetoolsCreate.self, ImagetoolsInspect.self])
}

struct ImagetoolsCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Push an index of every manifest of the source images (images or indexes) under each -t name.")

    @OptionGroup var global: GlobalOptions

    @Option(name: [.short, .customLong("tag")], help: "Where to push the index (repeatable).")
    var tags: [String] = []

    @Option(name: .long, help: "An annotation of the index, KEY=VALUE (repeatable; an index: prefix is accepted).")
    var annotation: [String] = []

    @Flag(name: .customLong("dry-run"), help: "Print the index instead of pushing it.")
    var dryRun = false

    @Argument(help: "Source images: REF or REF@sha256:….")
    var sources: [String]

    func run() throws {
        guard !tags.isEmpty || dryRun else { throw ValidationError("imagetools create needs -t NAME (or --dry-run)") }
        var annotations: [String: String] = [:]
        for a in annotation {
            var text = Substring(a)
            if text.hasPrefix("index:") { text = text.dropFirst(6) }
            let kv = text.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw ValidationError("--annotation \(a): expected [index:]KEY=VALUE") }
            annotations[kv[0]] = kv[1]
        }
        let store = try StateDirectory.open(global.root)
        let refs = try sources.map(Reference.init(parsing:))
        for target in try (tags.isEmpty ? [sources[0]] : tags).map(Reference.init(parsing:)) {
            let (d, bytes) = try Imagetools.create(target: target, sources: refs, store: store, annotations: annotations, dryRun: dryRun) { line in
                FileHandle.standardError.write(Data((line + "\n").utf8))
            }
            if dryRun {
                print(String(decoding: bytes, as: UTF8.self))
                return
            }
            print("\(target) \(d.digest)")
        }
    }
}

struct ImagetoolsInspect: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show an image in a registry: its index and manifests.")

    @Flag(name: .long, help: "Print the manifest or index as the registry serves it.")
    var raw = false

    @Argument(help: "REF or REF@sha256:….")
    var reference: String

    func run() throws {
        let ref = try Reference(parsing: reference)
        let (top, bytes, entries) = try Imagetools.inspect(ref)
        if raw {
            FileHandle.standardOutput.write(Data(bytes))
            return
        }
        print("Name:      \(ref)")
        print("MediaType: \(top.mediaType)")
        print("Digest:    \(top.digest)")
        guard !entries.isEmpty else { return }
        print("\nManifests:")
        for (i, e) in entries.enumerated() {
            if i > 0 { print("") }
            print("  Name:        \(ref.registry)/\(ref.repository)@\(e.digest)")
            print("  MediaType:   \(e.mediaType)")
            print("  Platform:    \(e.platform?.description ?? "-")")
            for (k, v) in (e.annotations ?? [:]).sorted(by: { $0.key < $1.key }) { print("  Annotation:  \(k)=\(v)") }
        }
    }
}
