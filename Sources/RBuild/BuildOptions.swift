import Foundation
import RBuildAttest
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// Everything `rbuild build` takes, as an embedding program sets it.
public struct BuildOptions: Sendable {
    /// The build context directory; nil when there is none (`rbuild build -` with a Dockerfile
    /// on stdin): COPY and ADD from the context then fail with a message saying so.
    public var contextDirectory: String?
    /// A git URL as the build context (`https://h/o/r.git#REF:SUBDIR`, `git@h:o/r.git`, …; see
    /// `GitReference`): checked out into a temporary directory that is `contextDirectory` for
    /// the build. Unless `dockerfileText` is set, the Dockerfile is read from that checkout:
    /// `dockerfilePath` (relative to the context), else `Dockerfile`.
    public var contextURL: String?
    /// The Dockerfile: its text, and the name errors show. `Builder.load` fills both.
    public var dockerfileText: String = ""
    public var dockerfileName: String = "Dockerfile"
    /// Where the Dockerfile was read from (for a .dockerignore beside it: `NAME.dockerignore`).
    public var dockerfilePath: String?
    public var buildArgs: [String: String] = [:]
    public var target: String?
    /// `--label`: added to the image config's labels.
    public var labels: [String: String] = [:]
    public var noCache = false
    /// Stages whose steps skip the cache (`--no-cache-filter`).
    public var noCacheFilter: [String] = []
    /// `--pull`: check the registry for every base image, even one the local store has.
    public var pull = false
    /// `--build-context name=value`: a directory, `docker-image://REF`, `oci-layout://DIR[:TAG]`,
    /// a git URL, or an http(s) URL of a tarball (unpacked).
    public var buildContexts: [String: String] = [:]
    /// Named contexts that are another build's result (bake's `target:OTHER`): lowered with
    /// this build, for each of its platforms, into one graph, so their steps are this build's.
    public var targetContexts: [String: BuildOptions] = [:]
    /// Put before every step name (bake: the target's name).
    public var label: String?
    /// `--secret id=ID,src=FILE` / `id=ID,env=VARIABLE`: read when a step mounts them, never
    /// stored.
    public var secrets: [String: BuildSecrets.Source] = [:]
    /// `--ssh ID[=SOCKET|KEYFILE[,KEYFILE…]]`: no path means $SSH_AUTH_SOCK.
    public var ssh: [String: [String]] = [:]
    /// The platform to build for (default: the host's).
    public var platform: Platform?
    /// Several platforms built at once (`--platform a,b`): `Builder.build(platforms:)`.
    public var platforms: [Platform] = []
    /// `--network`: the network of RUN steps that do not choose one (`RUN --network=…`): a
    /// network namespace of their own with outbound access (`.isolated`, the default), `.none`,
    /// or the host's (`.host`, which needs the `network.host` entitlement).
    public var network: NetworkMode = .isolated
    /// `--add-host NAME:IP`: /etc/hosts entries of every RUN step (part of each step's cache key).
    public var extraHosts: [ExtraHost] = []
    /// `--annotation`: OCI annotations of the exported manifests, index and their descriptors.
    public var annotations = ImageAnnotations()
    /// `--shm-size`: the size of /dev/shm in RUN steps (nil: 64 MiB).
    public var shmSize: Int64?
    /// `--ulimit`: resource limits of RUN steps; a hard limit above the caller's fails the build
    /// before anything runs.
    public var ulimits: [Ulimit] = []
    /// `--allow`: what the build's steps may use beyond the sandbox's defaults. A build whose
    /// graph needs an entitlement not granted here fails before anything runs.
    public var entitlements: Set<Entitlement> = []
    /// `--cache-from`: caches whose steps count as cached (after the local cache index's; none
    /// with `noCache`).
    public var cacheFrom: [CacheImportSpec] = []
    /// `--cache-to`: where the build's cache is exported once the images are built.
    public var cacheTo: [CacheExportSpec] = []
    /// Compression, level and SOURCE_DATE_EPOCH of the layers made.
    public var layer = LayerOptions()
    /// `--provenance`, `--sbom`, `--attest`: attestations attached to each platform's image.
    public var attestations = AttestationRequest()
    public var progress: ProgressSink?
    /// Numbers the steps; pass one to continue its numbering afterwards (exporting).
    public var reporter: ProgressReporter?
    /// Leave a build record in the state dir (`rbuild history`; `BuildHistory`).
    public var recordHistory = true

    public init() {}

    /// Whether a context as given (`rbuild build CONTEXT`, a bake target's) is a git URL by
    /// BuildKit's rules; `github.com/o/r` only when `directory` has no such path.
    public static func isGitContext(_ text: String, in directory: String = ".") throws -> Bool {
        guard let git = try GitReference.parse(text) else { return false }
        let path = text.hasPrefix("/") ? text : directory + "/" + text
        return !(git.indistinguishableFromLocal && FileManager.default.fileExists(atPath: path))
    }

    /// Adds one `--secret` value: `id=ID,src=FILE`, `id=ID,env=VARIABLE`, `type=file|env`
    /// (buildx's forms); with neither src nor env, the variable named ID.
    public mutating func addSecret(_ text: String) throws {
        var id: String?, src: String?, env: String?, type: String?
        for field in text.split(separator: ",") {
            let kv = field.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw BuildFailure("--secret \(text): expected KEY=VALUE fields, not \"\(field)\"") }
            switch kv[0].lowercased() {
            case "id": id = kv[1]
            case "src", "source": src = kv[1]
            case "env": env = kv[1]
            case "type": type = kv[1].lowercased()
            default: throw BuildFailure("--secret \(text): unknown field \(kv[0]) (expected id, src, env, type)")
            }
        }
        guard let id, !id.isEmpty else { throw BuildFailure("--secret \(text): id= is required") }
        switch type {
        case nil, "file", "env": break
        default: throw BuildFailure("--secret \(text): type=\(type!) (expected file or env)")
        }
        if let src, env == nil, type != "env" {
            secrets[id] = .file(src)
        } else if type == "env" || src == nil {
            secrets[id] = .environment(env ?? src ?? id)
        } else {
            throw BuildFailure("--secret \(text): give src= or env=, not both")
        }
    }

    /// Adds one `--ssh` value: `default`, `ID=SOCKET`, `ID=KEYFILE[,KEYFILE…]`.
    public mutating func addSSH(_ text: String) throws {
        let kv = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard let id = kv.first, !id.isEmpty, !id.contains(",") else {
            throw BuildFailure("--ssh \(text): expected default or ID=SOCKET|KEYFILE[,KEYFILE…]")
        }
        ssh[id] = kv.count == 2 ? kv[1].split(separator: ",").map(String.init) : []
    }
}

/// A built image: its manifest (in the state dir's content store) and what the exporters need.
public struct BuiltImage: Sendable {
    /// The manifest, with its platform.
    public var manifest: Descriptor
    public var config: ImageConfig
    /// The layers as built (uncompressed) and their diffIDs: `Builder.rootfs(of:)` stacks them,
    /// `Builder.exportable` compresses them.
    public internal(set) var layers: [Descriptor]
    public internal(set) var diffIDs: [Digest]
    /// Its attestations (`BuildOptions.attestations`), attached when it is exported.
    public internal(set) var attestations: [Attestation] = []
}
