import ArgumentParser
import Foundation
import RBuild
#if canImport(Glibc)
import Glibc
#endif

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a command in the rootless sandbox: over a root filesystem (--rootfs DIR) or a local image.",
        usage: "rbuild run [options] --rootfs DIR -- CMD [ARG…]\n       rbuild run [options] IMAGE [-- CMD [ARG…]]",
        discussion: """
        The command runs in new user, mount, pid, ipc, uts and cgroup namespaces with a seccomp \
        filter, Docker's default capabilities and no new privileges. Its exit status is rbuild's.
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Root filesystem directory to run in (instead of an image).")
    var rootfs: String?

    @Option(name: [.short, .long], help: "UID[:GID] or NAME[:GROUP] inside the sandbox (default 0:0).")
    var user: String?

    @Option(name: [.short, .long], help: "Working directory inside the sandbox (created when missing; default: the image's, or /).")
    var workdir: String?

    @Option(name: [.short, .long], help: "Set an environment variable (KEY=VALUE, or KEY to copy it from here).")
    var env: [String] = []

    @Option(name: .long, help: "host (default), none (a network namespace with only loopback) or default (a network namespace of its own with outbound access through slirp4netns or pasta, as a RUN step gets).")
    var network: String = "host"

    @Option(name: .customLong("add-host"), help: "NAME:IP added to the sandbox's /etc/hosts (repeatable).")
    var addHosts: [String] = []

    @Option(name: .long, help: "Hostname inside the sandbox.")
    var hostname: String = "rbuild"

    @Flag(name: .long, help: "Mount the root filesystem read-only.")
    var readOnly = false

    @Option(name: .long, help: "type=bind,source=S,target=T[,readonly]")
    var mount: [String] = []

    @Option(name: .long, help: "Platform of the root filesystem's binaries, e.g. linux/arm64 (default: the host's); others run under qemu-user-static.")
    var platform: String?

    @Option(name: .long, help: "A seccomp profile in moby's JSON format, or 'unconfined' (default: the built-in profile).")
    var seccompProfile: String?

    @Option(name: .long, help: "Identity mapping: auto (default), single or subordinate.")
    var userns: String = "auto"

    @Option(name: .long, help: "How an image's layers become the root: overlay, fuse-overlayfs or copy (default: the first that works here; see `rbuild info`).")
    var snapshotter: String?

    @Option(name: .long, help: "How RUN steps are isolated: auto (the default: the strongest this system allows), sandbox, no-pid-sandbox or chroot (see `rbuild info`); also RBUILD_ISOLATION.")
    var isolation: String?

    @Flag(name: [.short, .long], help: "Keep stdin open: the command reads rbuild's stdin (without it, the command's stdin is /dev/null).")
    var interactive = false

    @Flag(name: [.customShort("t"), .long], help: "Give the command a terminal of its own (a pseudo-terminal in the sandbox, relayed to this one; never this terminal itself).")
    var tty = false

    @Option(name: .customLong("max-layer-size"), help: "The most bytes one image layer may unpack to, e.g. 64GiB (the default), 512m; also RBUILD_MAX_LAYER_SIZE.")
    var maxLayerSize: String?

    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).")
    var command: [String] = []

    func run() throws {
        let requested = try isolation.flatMap(Isolation.parse)
        let chosen = try Isolation.choose(requested)
        var args = command
        var spec: SandboxSpec
        var scratch: String?
        var imageRun: ImageRun?
        defer {
            imageRun?.cleanUp()
            if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        }
        if let rootfs {
            if args.first == "--" { args.removeFirst() }
            guard !args.isEmpty else {
                throw ValidationError("missing command: rbuild run --rootfs DIR -- CMD [ARG…]")
            }
            spec = SandboxSpec(rootfs: rootfs, argv: args)
        } else {
            guard let image = args.first, image != "--" else {
                throw ValidationError("rbuild run needs --rootfs DIR or an IMAGE")
            }
            args.removeFirst()
            if args.first == "--" { args.removeFirst() }
            // Ctrl-C while the image is still being unpacked must still clean up (the deferred
            // removal above), not kill the process where it stands.
            Sandbox.killSandboxesOnInterrupt()
            let store = try StateDirectory.open(global.root)
            let dir = try makeScratchDirectory(in: store.layout.run)
            scratch = dir
            let tasks = SandboxTasks()
            // The chroot isolation mounts nothing: its root is a copy.
            let kind = try Snapshotters.choose(try snapshotterKind(snapshotter) ?? (chosen.isolation == .chroot ? .copy : nil),
                                               tasks: tasks, stateDirectory: store.root).kind
            let snapshots = try Snapshotters.make(kind, stateDirectory: store.root, tasks: tasks,
                                                  maxLayerSize: try MaxLayerSize.resolve(flag: maxLayerSize))
            let run = try prepareImageRun(image, platform: try platform.map(Platform.init(parsing:)), store: store,
                                          command: args, snapshotter: snapshots,
                                          scratch: dir)
            imageRun = run
            spec = run.spec
        }
        try configure(&spec)
        spec.isolation = chosen.isolation
        if let warning = chosen.warning {
            FileHandle.standardError.write(Data("rbuild: isolation \(chosen.isolation.rawValue): \(warning)\n".utf8))
        }
        if Sandbox.interruptedBy != 0 { throw ExitCode(128 + Sandbox.interruptedBy) }
        let status = try Sandbox.run(spec)
        throw ExitCode(status)
    }

    func configure(_ spec: inout SandboxSpec) throws {
        spec.forwardSignals = true
        // As docker run: stdin only with -i; a terminal only with -t, and then one of the
        // sandbox's own (the command runs in a session of its own either way, so it can never
        // reach this terminal through /dev/tty).
        if tty {
            spec.terminal = TerminalAttachment(input: interactive ? 0 : nil, output: 1)
        } else if !interactive {
            let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard null >= 0 else { throw RuntimeError(.setupFailed, "cannot open /dev/null: \(String(cString: strerror(errno)))") }
            spec.stdin = null   // open for as long as rbuild runs
        }
        if let user { spec.user = try UserSpec.parse(user) }
        if let workdir {
            guard workdir.hasPrefix("/") else {
                throw RuntimeError(.badOption, "--workdir \(workdir) must be an absolute path")
            }
            spec.workdir = workdir
        }
        spec.env += try env.map { entry in
            if entry.contains("=") { return entry }
            guard let value = getenvString(entry) else {
                throw RuntimeError(.badOption, "--env \(entry): no such variable here to copy (use KEY=VALUE)")
            }
            return entry + "=" + value
        }
        guard let mode = NetworkMode(rawValue: network) else {
            throw RuntimeError(.badOption, "--network \(network): expected host, none or default")
        }
        spec.network = mode
        spec.extraHosts = try addHosts.map(ExtraHost.parse)
        spec.hostname = hostname
        spec.readOnlyRoot = readOnly
        spec.mounts = try mount.map(BindMount.parse)
        switch userns {
        case "auto": break
        case "single": spec.idMapping = .single
        case "subordinate": spec.idMapping = .subordinate
        default: throw RuntimeError(.badOption, "--userns \(userns): expected auto, single or subordinate")
        }
        switch seccompProfile {
        case nil: break
        case "unconfined": spec.seccomp = .unconfined
        case let path?: spec.seccomp = .profile(try SeccompProfile.load(path: path))
        }
        if let platform {
            guard let arch = Architecture(platform: platform) else {
                throw RuntimeError(.badOption, "--platform \(platform): unknown platform (known: \(Architecture.allCases.map(\.platform).joined(separator: ", ")))")
            }
            spec.architecture = arch
        }
    }
}

func getenvString(_ name: String) -> String? {
    guard let p = getenv(name) else { return nil }
    return String(cString: p)
}
