import ArgumentParser
import Foundation
import RBuild

/// `rbuild builder`: named sets of remote nodes, as `docker buildx create/ls/rm/use/inspect`.
struct BuilderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "builder",
        abstract: "Manage builders: sets of machines (nodes, reached over ssh) that build the platforms they run natively.",
        subcommands: [BuilderCreate.self, BuilderList.self, BuilderRemove.self, BuilderUse.self, BuilderInspect.self]
    )
}

struct BuilderCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a builder, or add a node to one (--append).",
        discussion: """
        A node is rbuild on another machine, reached with the system ssh client (your \
        ~/.ssh/config, agent and known_hosts apply; RBUILD_SSH_COMMAND replaces `ssh`). Nothing \
        listens on the node: each build starts `rbuild node-build` there over ssh.
        """
    )

    @Option(name: .long, help: "The node: ssh://[USER@]HOST[:PORT].")
    var node: String

    @Option(name: .long, help: "The node's name (default: NAME0, NAME1, …).")
    var name: String?

    @Option(name: .long, help: "Platforms the node builds natively, comma-separated (default: what it reports).")
    var platform: [String] = []

    @Option(name: .customLong("driver-opt"), help: "rbuild=PATH (rbuild on the node; default: rbuild on its PATH), root=DIR (its state dir).")
    var driverOpts: [String] = []

    @Flag(name: .long, help: "Add the node to the existing builder BUILDER.")
    var append = false

    @Flag(name: .long, help: "Make it the builder of later builds (builder use).")
    var use = false

    @Argument(help: "The builder's name.")
    var builder: String

    func run() throws {
        let store = BuilderStore()
        var config = BuilderConfig(name: builder, nodes: [])
        if append {
            config = try store.load(builder)
        } else if store.exists(builder) {
            throw ValidationError("a builder named \(builder) exists: use --append to add a node, or builder rm it first")
        }
        var options: [String: String] = [:]
        for o in driverOpts.flatMap({ $0.split(separator: ",").map(String.init) }) {
            let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, BuilderNode.knownOptions.contains(kv[0]) else {
                throw ValidationError("--driver-opt \(o): expected rbuild=PATH or root=DIR")
            }
            options[kv[0]] = kv[1]
        }
        let platforms = try platform.flatMap { $0.split(separator: ",") }.map { try Platform(parsing: String($0).trimmingCharacters(in: .whitespaces)).description }
        let nodeName = name ?? "\(builder)\(config.nodes.count)"
        guard !config.nodes.contains(where: { $0.name == nodeName }) else { throw ValidationError("builder \(builder) has a node named \(nodeName)") }
        config.nodes.append(BuilderNode(name: nodeName, endpoint: try NodeEndpoint(parsing: node), platforms: platforms, options: options))
        try store.save(config)
        if use { try store.use(builder) }
        print(builder)
    }
}

struct BuilderList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List builders and their nodes.")

    @Option(name: .long, help: "table (default) or json.")
    var format = "table"

    func run() throws {
        let store = BuilderStore()
        let builders = try store.list()
        let current = store.current() ?? BuilderStore.defaultName
        if format == "json" {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try e.encode(builders), as: UTF8.self))
            return
        }
        guard format == "table" else { throw ValidationError("--format \(format): expected table or json") }
        var rows = [["NAME/NODE", "ENDPOINT", "PLATFORMS"]]
        rows.append([BuilderStore.defaultName + (current == BuilderStore.defaultName ? " *" : ""), "local", Platform.host.description])
        for b in builders {
            rows.append([b.name + (current == b.name ? " *" : ""), "", ""])
            for n in b.nodes {
                let platforms = n.platforms.isEmpty ? (n.probe.map { ($0.native + $0.emulated.map { $0 + "*" }).joined(separator: ", ") } ?? "(not probed: builder inspect)")
                    : n.platforms.joined(separator: ", ")
                rows.append(["  \\_ " + n.name, n.endpoint.description, platforms])
            }
        }
        printTable(rows)
    }
}

struct BuilderRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove builders (their nodes keep their state dirs).")

    @Argument(help: "Builder names.")
    var names: [String]

    func run() throws {
        let store = BuilderStore()
        for n in names {
            guard n != BuilderStore.defaultName else { throw ValidationError("the default builder cannot be removed") }
            try store.remove(n)
        }
    }
}

struct BuilderUse: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "use", abstract: "Build with this builder from now on (default: this machine alone).")

    @Argument(help: "The builder's name.")
    var name: String

    func run() throws { try BuilderStore().use(name) }
}

struct BuilderInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Probe each node of a builder: its rbuild version and the platforms it runs natively or by emulation.")

    @Argument(help: "The builder (default: the current one).")
    var name: String?

    func run() throws {
        let store = BuilderStore()
        guard var config = try store.resolve(name) else {
            print("Name:     \(BuilderStore.defaultName)\nNodes:    this machine (rbuild info shows what it runs)")
            return
        }
        print("Name:     \(config.name)")
        var failed: [String] = []
        for i in config.nodes.indices {
            let n = config.nodes[i]
            print("")
            print("Name:      \(n.name)")
            print("Endpoint:  \(n.endpoint)")
            if !n.options.isEmpty { print("Options:   " + n.options.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")) }
            do {
                let probe = try NodeLink.probe(n)
                config.nodes[i].probe = probe
                print("Status:    running")
                print("Version:   \(probe.version)")
                if !n.platforms.isEmpty { print("Declared:  \(n.platforms.joined(separator: ", "))") }
                print("Platforms: " + (probe.native + probe.emulated.map { $0 + "*" }).joined(separator: ", ") + "  (* emulated)")
            } catch {
                print("Status:    error: \(error)")
                failed.append(n.name)
            }
        }
        try store.save(config)
        if !failed.isEmpty { throw BuildFailure("cannot reach node\(failed.count == 1 ? "" : "s") " + failed.joined(separator: ", ")) }
    }
}

/// Columns padded to their widest cell.
func printTable(_ rows: [[String]]) {
    guard let header = rows.first else { return }
    let widths = header.indices.map { i in rows.map { $0[i].count }.max()! + 3 }
    for r in rows {
        print(r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined())
    }
}

/// `rbuild node-build`: the node side of a build on a builder's node (started over ssh by the
/// local rbuild; the protocol runs on stdin and stdout). Not for people.
struct NodeBuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-build", abstract: "The node side of a build on a remote node (started over ssh by rbuild).",
        shouldDisplay: false)

    @OptionGroup var global: GlobalOptions

    func run() throws {
        // The protocol owns stdout: anything else printed goes to stderr, which ssh shows.
        let out = fcntl(1, F_DUPFD_CLOEXEC, 3)
        dup2(2, 1)
        Sandbox.killSandboxesOnInterrupt()
        let builder = try Builder(stateDirectory: global.root)
        let status = builder.serveNode(input: 0, output: out)
        if status != 0 { throw ExitCode(status) }
    }
}
extension NodeError: RenderableError { var exitStatus: Int32 { 1 } }
