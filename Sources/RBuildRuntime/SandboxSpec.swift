#if canImport(Glibc)
import Glibc
#endif
import RBuildSystem

/// Everything that describes one process run in the sandbox.
public struct SandboxSpec: Sendable {
    /// Absolute host path of the root filesystem; with `overlay`, an empty directory that the
    /// overlay is mounted on (inside the sandbox's mount namespace only).
    public var rootfs: String
    /// The root as a kernel overlayfs of snapshot directories, mounted in the sandbox's user
    /// namespace: what snapshotters hand to a build step.
    public var overlay: OverlayRoot?
    /// The command; argv[0] is looked up on the sandbox's PATH when it has no '/'.
    public var argv: [String]
    /// KEY=VALUE entries. PATH, HOSTNAME and HOME get Docker's defaults when absent.
    public var env: [String]
    /// Who runs the command, inside the user namespace.
    public var user: UserSpec
    /// How `user` is looked up: reads a file of the root as the sandbox will see it (nil when
    /// it is missing), refusing what `readFileInRoot` refuses. nil: the root's directories are
    /// read (`UserDatabase.resolve(_:roots:)`), which sees neither the whiteouts nor the
    /// symlinks between an overlay's layers; a snapshot's view sees both.
    public var readRootFile: (@Sendable (String) throws -> [UInt8]?)?
    /// Absolute working directory inside the root; created when missing, as docker does.
    public var workdir: String
    public var hostname: String
    public var network: NetworkMode
    /// `--add-host`: lines added to the sandbox's /etc/hosts.
    public var extraHosts: [ExtraHost] = []
    public var readOnlyRoot: Bool
    /// The size of /dev/shm (`--shm-size`); nil: 64 MiB, as docker's default.
    public var shmSize: Int64?
    /// Resource limits (`--ulimit`), over the default (RLIMIT_NOFILE's soft limit raised to the
    /// hard one).
    public var ulimits: [Ulimit] = []
    public var mounts: [BindMount]
    /// What a build step mounts besides its root (RUN --mount), in order, after `mounts`.
    public var extraMounts: [SandboxMount] = []
    public var capabilities: CapabilitySet
    /// nil: the built-in default profile. Use `SeccompMode.unconfined` only for debugging.
    public var seccomp: SeccompMode
    /// The architecture of the binaries to run; another than the host's is emulated with
    /// qemu-user-static (see `Emulation`).
    public var architecture: Architecture
    /// Forces an identity mode instead of the automatic choice (tests, `--userns`).
    public var idMapping: IDMappingMode?
    /// The isolation to use; nil: `RBUILD_ISOLATION`, else the strongest this system allows
    /// (`Isolation.choose`).
    public var isolation: Isolation?
    /// File descriptors of this process that become the command's stdin, stdout and stderr;
    /// nil passes ours through. The caller keeps ownership (a pipe to capture a step's log).
    public var stdin: Int32?
    public var stdout: Int32?
    public var stderr: Int32?
    /// A pseudo-terminal of the sandbox's own as the command's stdin, stdout, stderr and
    /// controlling terminal (`rbuild run -t`), relayed to the caller's descriptors; `stdin`,
    /// `stdout` and `stderr` are then unused. Without one, the command has no controlling
    /// terminal at all (it runs in a session of its own).
    public var terminal: TerminalAttachment?
    /// Install process-wide handlers that pass SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2/SIGWINCH
    /// sent to this process on to the sandbox while it runs (what the `rbuild run` command wants;
    /// an embedding program usually has its own handlers, so it is off by default).
    public var forwardSignals = false

    public init(rootfs: String, argv: [String]) {
        self.rootfs = rootfs
        self.argv = argv
        self.env = []
        self.user = .root
        self.workdir = "/"
        self.hostname = "rbuild"
        self.network = .host
        self.readOnlyRoot = false
        self.mounts = []
        self.capabilities = .dockerDefault
        self.seccomp = .default
        self.idMapping = nil
        self.architecture = .host
        self.overlay = nil
    }

    /// A spec that runs `argv` on the root a snapshotter described.
    public init(root: RootMounts, argv: [String]) {
        self.init(rootfs: root.rootfs, argv: argv)
        overlay = root.overlay
    }

    /// The mount points a sandbox for this spec makes in its root when they are missing (those
    /// not under another mount): a build step removes the ones it made from its layer.
    public var rootMountPoints: [String] { MountPlan.rootMountPoints(self) }

    /// The root filesystem (`rootfs` and `overlay` together), as snapshotters describe it.
    public var root: RootMounts {
        get { RootMounts(rootfs: rootfs, overlay: overlay) }
        set {
            rootfs = newValue.rootfs
            overlay = newValue.overlay
        }
    }
}

/// A filesystem a build step mounts besides its root (RUN --mount). Every target is an absolute
/// path resolved inside the root: a symlink in the image never sends a mount outside it.
public enum SandboxMount: Sendable {
    /// A host directory, file or unix socket (a cache mount's directory, an agent's socket), or
    /// the part of a directory at `subpath`, resolved inside it.
    case bind(source: String, subpath: String? = nil, target: String, readOnly: Bool)
    /// A snapshot's root as a snapshotter describes it (with an overlay, `rootfs` is an empty
    /// directory to mount it on), or the part of it at `subpath`, resolved inside it (a file
    /// when `isDirectory` is false).
    case root(RootMounts, subpath: String? = nil, target: String, readOnly: Bool, isDirectory: Bool = true)
    /// An empty tmpfs (mode 1777), `size` bytes at most (nil: the kernel's default).
    case tmpfs(target: String, size: Int64?)
    /// A file made in memory with these bytes, owner and mode, read-only: a secret, which
    /// never touches a disk.
    case file(target: String, content: [UInt8], uid: UInt32, gid: UInt32, mode: mode_t)

    public var target: String {
        switch self {
        case .bind(_, _, let t, _), .root(_, _, let t, _, _), .tmpfs(let t, _), .file(let t, _, _, _, _): return t
        }
    }
}

public enum NetworkMode: String, Sendable, CaseIterable {
    /// A network namespace of its own whose only way out is a user-mode network helper on the
    /// host side (slirp4netns or pasta, see `NetworkHelper`): the outside is reachable as it is
    /// for rbuild itself, the host's loopback and abstract unix sockets are not. What a RUN step
    /// gets by default; the raw value is BuildKit's name for it.
    case isolated = "default"
    /// The host's network namespace.
    case host
    /// A new, empty network namespace with only loopback, brought up.
    case none

    /// Whether the sandbox gets a network namespace of its own (everything but `host`).
    public var hasOwnNamespace: Bool { self != .host }
}

/// `--add-host NAME:IP`: one line of a sandbox's /etc/hosts.
public struct ExtraHost: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    /// An IPv4 or IPv6 address, as written (without brackets).
    public var address: String

    public init(name: String, address: String) {
        self.name = name
        self.address = address
    }

    /// Parses docker's forms: `NAME:IP`, `NAME=IP`, and an IPv6 address after either, bare or in
    /// brackets (`h:::1`, `h=[::1]`). `host-gateway` is refused: no address of the host is
    /// reachable from an isolated step but through the network helper, which keeps the host's
    /// loopback out.
    public static func parse(_ text: String) throws -> ExtraHost {
        // '=' first: docker's newer separator, unambiguous with IPv6. Else the first ':'.
        guard let sep = text.firstIndex(of: "=") ?? text.firstIndex(of: ":") else {
            throw RuntimeError(.badOption, "--add-host \(text): expected NAME:IP")
        }
        let name = String(text[..<sep])
        var address = String(text[text.index(after: sep)...])
        if address.count > 2, address.hasPrefix("["), address.hasSuffix("]") {
            address = String(address.dropFirst().dropLast())
        }
        guard !name.isEmpty, !name.contains(where: { $0.isWhitespace || $0 == "#" }) else {
            throw RuntimeError(.badOption, "--add-host \(text): the host name must be non-empty, without spaces or '#'")
        }
        if address == "host-gateway" {
            throw RuntimeError(.badOption, "--add-host \(text): host-gateway is not supported: a RUN step's own network never reaches the host's loopback; use --network host --allow network.host for host services")
        }
        guard isIPAddress(address) else {
            throw RuntimeError(.badOption, "--add-host \(text): '\(address)' is not an IPv4 or IPv6 address")
        }
        return ExtraHost(name: name, address: address)
    }

    static func isIPAddress(_ s: String) -> Bool {
        var buf = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET, s, &buf) == 1 || inet_pton(AF_INET6, s, &buf) == 1
    }

    /// `NAME:IP`, the form `--add-host` takes.
    public var description: String { "\(name):\(address)" }
}

public enum SeccompMode: Sendable {
    case `default`
    case profile(SeccompProfile)
    case unconfined
}

/// `--user`: a user and optional group, each a name from the image or a number.
public struct UserSpec: Sendable, Equatable {
    public var user: String
    public var group: String?

    public init(user: String, group: String? = nil) {
        self.user = user
        self.group = group
    }

    public static let root = UserSpec(user: "0", group: "0")

    /// Parses docker's `--user` forms: `UID`, `UID:GID`, `NAME`, `NAME:GROUP`.
    public static func parse(_ text: String) throws -> UserSpec {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        func valid(_ s: String) -> Bool {
            !s.isEmpty && s.allSatisfy { $0.isLetter || $0.isNumber || "_-.$".contains($0) }
        }
        guard parts.allSatisfy(valid) else {
            throw RuntimeError(.badUser, "invalid --user '\(text)': expected UID[:GID] or NAME[:GROUP]")
        }
        return UserSpec(user: parts[0], group: parts.count > 1 ? parts[1] : nil)
    }
}

/// `--mount type=bind,source=S,target=T[,readonly]`.
public struct BindMount: Sendable, Equatable {
    public var source: String
    public var target: String
    public var readOnly: Bool

    public init(source: String, target: String, readOnly: Bool = false) {
        self.source = source
        self.target = target
        self.readOnly = readOnly
    }

    /// Parses the docker `--mount` syntax (only `type=bind` for now).
    public static func parse(_ text: String) throws -> BindMount {
        var type = "bind", source: String?, target: String?, readOnly = false
        for field in text.split(separator: ",") {
            let kv = field.split(separator: "=", maxSplits: 1).map(String.init)
            let key = kv[0].lowercased(), value = kv.count > 1 ? kv[1] : nil
            switch (key, value) {
            case ("type", let v?): type = v
            case ("source", let v?), ("src", let v?): source = v
            case ("target", let v?), ("destination", let v?), ("dst", let v?): target = v
            case ("readonly", nil), ("ro", nil): readOnly = true
            case ("readonly", let v?), ("ro", let v?):
                guard let b = Bool(v.lowercased()) else {
                    throw RuntimeError(.badMount, "invalid --mount '\(text)': \(key)=\(v) is not true or false")
                }
                readOnly = b
            default:
                throw RuntimeError(.badMount, "invalid --mount '\(text)': unknown field '\(field)' (expected type=bind,source=S,target=T[,readonly])")
            }
        }
        guard type == "bind" else {
            throw RuntimeError(.badMount, "invalid --mount '\(text)': type=\(type) is not supported (only type=bind)")
        }
        guard let source, !source.isEmpty else {
            throw RuntimeError(.badMount, "invalid --mount '\(text)': missing source=")
        }
        guard let target, target.hasPrefix("/") else {
            throw RuntimeError(.badMount, "invalid --mount '\(text)': target= must be an absolute path inside the sandbox")
        }
        return BindMount(source: source, target: target, readOnly: readOnly)
    }
}
