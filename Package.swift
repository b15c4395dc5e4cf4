// swift-tools-version:6.0
// rbuild: a rootless, daemonless container image builder. The module layout follows
// ../shared/DESIGN.md: each target depends only on the layers below it.
import PackageDescription

let package = Package(
    name: "rbuild",
    products: [
        .executable(name: "rbuild", targets: ["rbuild"]),
        .library(name: "RBuild", targets: ["RBuild"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // Compose files are YAML (bake); HCL and JSON bake files are read by RBuildBake itself.
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // C at the edge: what must run between clone() and execve(), and library bindings.
        .target(name: "CRBuildChild", dependencies: ["CRBuildSys"]),
        // System calls Swift cannot make itself (variadic, or _GNU_SOURCE-only), for RBuildSystem.
        .target(name: "CRBuildSys"),
        // The C libraries below are headers only: CLazyLibraries loads each at first use.
        .systemLibrary(name: "CSeccomp", providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCap", providers: [.apt(["libcap-dev"])]),
        .systemLibrary(name: "CArchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", providers: [.apt(["libzstd-dev"])]),
        // sha256 from the system's OpenSSL: SHA-NI accelerated and no build cost (swift-crypto
        // would add minutes to every CI build on 2 cores).
        .systemLibrary(name: "CCrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // The functions of those libraries that rbuild calls, each loading its library on first
        // use: loaded at start, they and their dependencies (libxml2, ICU…) cost every process
        // about 7 ms, though most call few of them or none.
        .target(name: "CLazyLibraries", linkerSettings: [.linkedLibrary("dl")]),

        // The bottom: errno-carrying errors, fds, fd-relative walks, xattrs, temp dirs, the
        // state-dir layout, the id map, and the vocabulary types every layer shares (the platform).
        .target(name: "RBuildSystem", dependencies: ["CRBuildSys"]),
        .target(name: "RBuildRuntime", dependencies: ["RBuildSystem", "CRBuildChild", "CSeccomp", "CCap", "CLazyLibraries"]),
        .target(name: "RBuildDockerfile", dependencies: ["RBuildSystem", "RBuildSolver"]),
        .target(name: "RBuildOCI", dependencies: ["RBuildSystem", "CArchive", "CZlib", "CZstd", "CCrypto", "CLazyLibraries"]),
        // OCI and Snapshots never import the runtime or the C child (what they need done in a user
        // namespace reaches them as RBuildSystem's `UserNamespaceTasks`).
        .target(name: "RBuildSnapshots", dependencies: ["RBuildOCI", "RBuildSystem", "CArchive", "CLazyLibraries"]),
        .target(name: "RBuildSolver", dependencies: ["RBuildOCI", "RBuildSnapshots", "RBuildRuntime", "RBuildRegistry", "RBuildSystem", "CSQLite", "CLazyLibraries"]),
        // Above the registry client (DESIGN.md's layers): type=registry and push=true push themselves.
        .target(name: "RBuildAttest", dependencies: ["RBuildOCI", "RBuildSnapshots", "RBuildSystem", "CSQLite", "CLazyLibraries"]),
        .target(name: "RBuildExporters", dependencies: ["RBuildOCI", "RBuildSnapshots", "RBuildRegistry", "RBuildSystem", "RBuildAttest"]),
        // libcurl directly, where URLSession cannot go: a registry's own CA (CURLOPT_CAINFO).
        // libcurl is dlopen'ed at the first request (see curl.c): its 26 libraries cost every start.
        .target(name: "CRBuildCurl", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "RBuildRegistry", dependencies: ["RBuildOCI", "RBuildSystem", "CRBuildCurl"]),
        // Bake files (HCL subset, JSON, compose) → resolved targets; knows nothing of building.
        .target(name: "RBuildBake", dependencies: ["RBuildSystem", .product(name: "Yams", package: "Yams")]),
        // Remote native nodes over the system ssh client: builders, sessions, the node protocol.
        .target(name: "RBuildNodes", dependencies: ["RBuildSystem", "RBuildOCI", "RBuildRuntime", "RBuildSolver", "CArchive", "CLazyLibraries"]),
        .target(name: "RBuild", dependencies: ["RBuildRuntime", "RBuildDockerfile", "RBuildOCI", "RBuildSnapshots",
                                               "RBuildSolver", "RBuildExporters", "RBuildRegistry", "RBuildBake", "RBuildAttest",
                                               "RBuildNodes"]),
        .target(name: "RBuildCLI", dependencies: [
            "RBuild",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "rbuild", dependencies: ["RBuildCLI"]),
        .executableTarget(name: "rbuild-bench", dependencies: ["RBuild", "RBuildDockerfile", "RBuildOCI", "RBuildSnapshots", "RBuildSolver"], path: "Sources/rbuild-bench"),

        .testTarget(name: "RBuildSystemTests", dependencies: ["RBuildSystem"]),
        .testTarget(name: "RBuildRuntimeTests", dependencies: ["RBuildRuntime"]),
        .testTarget(name: "RBuildOCITests", dependencies: ["RBuildOCI", "RBuildSystem"]),
        .testTarget(name: "RBuildSnapshotsTests", dependencies: ["RBuildSnapshots", "RBuildSystem", "CArchive"]),
        // Test helpers more than one test target uses (a loopback HTTP server); never in a product.
        .target(name: "RBuildTestSupport", path: "Tests/RBuildTestSupport"),
        .testTarget(name: "RBuildRegistryTests", dependencies: ["RBuildRegistry", "RBuildOCI", "RBuildSystem", "RBuildTestSupport"]),
        .testTarget(name: "RBuildBakeTests", dependencies: ["RBuildBake"]),
        .testTarget(name: "RBuildNodesTests", dependencies: ["RBuildNodes", "RBuildOCI", "RBuildSystem", "RBuildSolver"]),
        .testTarget(name: "RBuildAttestTests", dependencies: ["RBuildAttest", "RBuildOCI", "RBuildSnapshots", "CSQLite"]),
        .testTarget(name: "RBuildSolverTests", dependencies: ["RBuildSolver", "RBuildExporters"]),
        .testTarget(name: "RBuildExportersTests", dependencies: ["RBuildExporters", "RBuildOCI", "RBuildSnapshots", "RBuildSystem"]),
        .testTarget(name: "RBuildDockerfileTests", dependencies: ["RBuildDockerfile", "RBuildSystem", "RBuildSolver", "RBuildOCI",
                                                                 "RBuildSnapshots"],
                    resources: [.copy("Fixtures")]),
        // Drives the real `rbuild` binary; scripts/test runs it as unprivileged users.
        .testTarget(name: "IntegrationTests", dependencies: ["RBuild", "RBuildOCI", "RBuildSystem", "RBuildTestSupport"]),
    ]
)
