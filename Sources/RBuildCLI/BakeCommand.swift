import ArgumentParser
import Foundation
import RBuild

struct BakeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bake",
        abstract: "Build the targets of bake files (HCL, JSON, compose) at once, as docker buildx bake.",
        discussion: """
        Without -f, the files buildx looks for in the current directory are read (compose.yaml, \
        docker-bake.hcl, …). TARGET names targets or groups; none: the default group. Every target \
        builds in this one process: a step that several targets share runs once.
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: [.short, .customLong("file")], help: "A bake file (repeatable; merged in order).")
    var files: [String] = []

    @Option(name: .customLong("set"), help: "Override a target's attribute: TARGET.KEY=VALUE (TARGET may be a glob: *.platform=linux/arm64).")
    var overrides: [String] = []

    @Flag(name: .long, help: "Print the resolved targets as JSON (buildx's --print) and build nothing.")
    var print = false

    @Option(name: .long, help: "List targets or variables (targets|variables) and build nothing.")
    var list: String?

    @Flag(name: .long, help: "Shorthand for --set=*.output=type=image: every target into the local image store.")
    var load = false

    @Flag(name: .long, help: "Shorthand for --set=*.output=type=image,push=true: every target pushed to its registry.")
    var push = false

    @Flag(name: .customLong("no-cache"), help: "Run every step of every target, using no cached result.")
    var noCache = false

    @Flag(name: .long, help: "Always fetch base images from their registry.")
    var pull = false

    @Option(name: .long, help: "auto, tty, plain, rawjson or quiet.")
    var progress: String = "auto"

    @Option(name: .long, help: "The builder to use; rbuild has one, `default`, until remote builders land.")
    var builder: String?

    @Option(name: .customLong("metadata-file"), help: "Write each target's build metadata (JSON, by target name) to this file.")
    var metadataFile: String?

    @Option(name: .long, help: "How image layers become root filesystems: overlay, fuse-overlayfs or copy.")
    var snapshotter: String?

    @Option(name: .long, help: "How RUN steps are isolated: auto (the default: the strongest this system allows), sandbox, no-pid-sandbox or chroot (see `rbuild info`); also RBUILD_ISOLATION.")
    var isolation: String?

    @Argument(help: "Targets or groups to build (default: the default group).")
    var targets: [String] = []

    /// Whether this invocation builds (and so runs in rbuild's own user namespace).
    var builds: Bool { !print && list == nil }

    func definition() throws -> BakeDefinition {
        let cwd = FileManager.default.currentDirectoryPath
        let names = files.isEmpty ? Bake.defaultFiles(in: cwd) : files
        guard !names.isEmpty else {
            throw BakeError(file: "", "no bake file found in \(cwd) (looked for \(Bake.defaultFileNames.joined(separator: ", "))); pass -f FILE")
        }
        let loaded = try names.map { name -> BakeFile in
            let path = name.hasPrefix("/") ? name : cwd + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else {
                throw BakeError(file: name, "cannot read it: it does not exist or is not readable")
            }
            return BakeFile(name: name, contents: [UInt8](data))
        }
        return try Bake.load(loaded, environment: ProcessInfo.processInfo.environment, overrides: overrides)
    }

    func run() throws {
        if let builder, builder != "default" {
            throw ValidationError("--builder \(builder): rbuild has one builder, default (remote builders are not there yet)")
        }
        let def = try definition()
        if print {
            FileHandle.standardOutput.write(Data(try def.printJSON(targets)))
            FileHandle.standardOutput.write(Data("\n".utf8))
            return
        }
        if let list {
            switch list {
            case "targets":
                Swift.print(pad("TARGET", 24) + " DESCRIPTION")
                for row in def.listTargets() { Swift.print(pad(row.name, 24) + " " + row.description) }
            case "variables":
                Swift.print(pad("VARIABLE", 24) + " " + pad("VALUE", 24) + " DESCRIPTION")
                for v in def.variables.sorted(by: { $0.name < $1.name }) {
                    Swift.print(pad(v.name, 24) + " " + pad(v.value ?? "", 24) + " " + (v.description ?? ""))
                }
            default:
                throw ValidationError("--list \(list): expected targets or variables")
            }
            return
        }
        let resolved = try def.resolve(targets)
        let (sink, tty) = try progressSink(progress)
        var run = BakeRunOptions(directory: FileManager.default.currentDirectoryPath)
        run.noCache = noCache
        run.pull = pull
        run.load = load
        run.push = push
        run.reporter = ProgressReporter(sink: sink)
        Sandbox.killSandboxesOnInterrupt()
        let kind = try snapshotterKind(snapshotter)
        let builder = try Builder(stateDirectory: global.root, snapshotter: kind, isolation: try isolation.flatMap(Isolation.parse))
        let outcomes = builder.bake(resolved, definition: def, run: run)
        tty?.finish()
        if Sandbox.interruptedBy != 0 {
            printError("bake interrupted")
            throw ExitCode(128 + Sandbox.interruptedBy)
        }
        if let metadataFile {
            var meta: [String: Any] = [:]
            for o in outcomes { if let m = try o.metadata() { meta[o.target] = m } }
            try JSONSerialization.data(withJSONObject: meta, options: [.prettyPrinted, .sortedKeys])
                .write(to: URL(fileURLWithPath: metadataFile))
        }
        let failed = outcomes.filter { $0.error != nil }
        for f in failed { printError("target \(f.target) failed: \(f.error!)") }
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

/// `text` padded with spaces to `width` characters (a column of a listing).
private func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

extension BakeError: RenderableError { var exitStatus: Int32 { 1 } }
