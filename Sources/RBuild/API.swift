import Foundation
import RBuildAttest
import RBuildBake
import RBuildDockerfile
import RBuildExporters
import RBuildNodes
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

// The public API of `import RBuild`: the library's own types (Builder, BuildOptions,
// BuildResult, BuiltImage, prune and check) and, named here one by one, the types of the modules
// below that an embedder meets in those signatures or needs to run, store, export and push. The
// rest of those modules stays theirs (cross-module internals are `package`).

// Platforms and the vocabulary of images.
public typealias Platform = RBuildSystem.Platform
public typealias PlatformError = RBuildSystem.PlatformError
public typealias SystemError = RBuildSystem.SystemError
public typealias ImageFileError = RBuildSystem.ImageFileError
public typealias Digest = RBuildOCI.Digest
public typealias Descriptor = RBuildOCI.Descriptor
public typealias Manifest = RBuildOCI.Manifest
public typealias ImageConfig = RBuildOCI.ImageConfig
public typealias Compression = RBuildOCI.Compression
public typealias LayerOptions = RBuildOCI.LayerOptions
public typealias ImageStore = RBuildOCI.ImageStore
public typealias StoreCheck = RBuildOCI.StoreCheck
public typealias ExportTarget = RBuildOCI.ExportTarget
public typealias OCIError = RBuildOCI.OCIError
public typealias MaxLayerSize = RBuildOCI.MaxLayerSize

// The Dockerfile frontend.
public typealias Dockerfile = RBuildDockerfile.Dockerfile
public typealias DockerfileError = RBuildDockerfile.DockerfileError
public typealias Outline = RBuildDockerfile.Outline
public typealias TargetInfo = RBuildDockerfile.TargetInfo

// The solver: progress, errors, the cache index, git URLs.
public typealias GitReference = RBuildSolver.GitReference
public typealias BuildEvent = RBuildSolver.BuildEvent
public typealias ProgressSink = RBuildSolver.ProgressSink
public typealias ProgressReporter = RBuildSolver.ProgressReporter
public typealias BuildError = RBuildSolver.BuildError
public typealias SolveError = RBuildSolver.SolveError
public typealias CacheIndex = RBuildSolver.CacheIndex
public typealias BuildSecrets = RBuildSolver.BuildSecrets
public typealias CacheMounts = RBuildSolver.CacheMounts
public typealias Entitlement = RBuildSolver.Entitlement
public typealias CacheImportSpec = RBuildSolver.CacheImportSpec
public typealias CacheExportSpec = RBuildSolver.CacheExportSpec
public typealias CacheExportMode = RBuildSolver.CacheExportMode

// Bake files.
public typealias Bake = RBuildBake.Bake
public typealias BakeFile = RBuildBake.BakeFile
public typealias BakeError = RBuildBake.BakeError
public typealias BakeTarget = RBuildBake.BakeTarget
public typealias BakeDefinition = RBuildBake.BakeDefinition
public typealias BakeVariable = RBuildBake.BakeVariable

// Outputs.
public typealias Exporter = RBuildExporters.Exporter
public typealias ExportRequest = RBuildExporters.ExportRequest
public typealias ExportResult = RBuildExporters.ExportResult
public typealias OutputSpec = RBuildExporters.OutputSpec
public typealias ExportError = RBuildExporters.ExportError
public typealias ImageAnnotations = RBuildExporters.ImageAnnotations
public typealias OCIExporter = RBuildExporters.OCIExporter
public typealias DockerExporter = RBuildExporters.DockerExporter
public typealias LocalExporter = RBuildExporters.LocalExporter
public typealias TarExporter = RBuildExporters.TarExporter
public typealias ImageExporter = RBuildExporters.ImageExporter
public typealias RegistryExporter = RBuildExporters.RegistryExporter

// Registries.
public typealias Reference = RBuildRegistry.Reference
public typealias Distribution = RBuildRegistry.Distribution
public typealias RegistryClient = RBuildRegistry.RegistryClient
public typealias RegistryError = RBuildRegistry.RegistryError
public typealias Credentials = RBuildRegistry.Credentials

// Snapshots.
public typealias Snapshot = RBuildSnapshots.Snapshot
public typealias Snapshotter = RBuildSnapshots.Snapshotter
public typealias SnapshotterKind = RBuildSnapshots.SnapshotterKind
public typealias Snapshotters = RBuildSnapshots.Snapshotters
public typealias SnapshotError = RBuildSnapshots.SnapshotError
public typealias SnapshotView = RBuildSnapshots.SnapshotView

// The sandbox runtime (`rbuild run`, embedders that run processes).
public typealias Sandbox = RBuildRuntime.Sandbox
public typealias SandboxSpec = RBuildRuntime.SandboxSpec
public typealias TerminalAttachment = RBuildRuntime.TerminalAttachment
public typealias SandboxTasks = RBuildRuntime.SandboxTasks
public typealias RuntimeError = RBuildRuntime.RuntimeError
public typealias Isolation = RBuildRuntime.Isolation
public typealias Attestation = RBuildAttest.Attestation
public typealias IsolationChoice = RBuildRuntime.IsolationChoice
public typealias Architecture = RBuildRuntime.Architecture
public typealias NetworkMode = RBuildRuntime.NetworkMode
public typealias NetworkHelper = RBuildRuntime.NetworkHelper
public typealias ExtraHost = RBuildRuntime.ExtraHost
public typealias Ulimit = RBuildRuntime.Ulimit
public typealias UserSpec = RBuildRuntime.UserSpec
public typealias SandboxMount = RBuildRuntime.SandboxMount
public typealias BindMount = RBuildRuntime.BindMount
public typealias SeccompProfile = RBuildRuntime.SeccompProfile
public typealias HostReport = RBuildRuntime.HostReport
public typealias UserNamespace = RBuildRuntime.UserNamespace
public typealias Emulation = RBuildRuntime.Emulation

extension ImageStore {
    /// `rbuild import`: a root filesystem (a directory, or a tarball: plain, gzip, bzip2, xz or
    /// zstd) stored as a one-layer image for `platform`; returns its manifest.
    public func importRootfs(_ path: String, platform: Platform, options: LayerOptions = LayerOptions()) throws -> Descriptor {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw OCIError(.notFound, "\(path) does not exist")
        }
        return isDir.boolValue ? try importDirectory(path, platform: platform, store: self, options: options)
            : try importTarball(path, platform: platform, store: self, options: options)
    }
}

/// An empty private directory under `parent` (made when missing).
public func makeScratchDirectory(in parent: String) throws -> String {
    try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
    return try makeTemporaryDirectory(in: parent, prefix: "")
}

// Also in those signatures.
public typealias MediaType = RBuildOCI.MediaType
public typealias IDMapping = RBuildSystem.IDMapping
public typealias OverlayRoot = RBuildSystem.OverlayRoot
public typealias RootMounts = RBuildSystem.RootMounts
public typealias ActiveSnapshot = RBuildSnapshots.ActiveSnapshot

// Builders and their remote nodes (`rbuild builder`, `rbuild build --builder`).
public typealias BuilderStore = RBuildNodes.BuilderStore
public typealias BuilderConfig = RBuildNodes.BuilderConfig
public typealias BuilderNode = RBuildNodes.BuilderNode
public typealias NodeEndpoint = RBuildNodes.NodeEndpoint
public typealias NodeProbe = RBuildNodes.NodeProbe
public typealias NodeLink = RBuildNodes.NodeLink
public typealias NodeError = RBuildNodes.NodeError
public typealias Placement = RBuildNodes.Placement
