import Foundation
import RBuildDockerfile
import RBuildExporters
import RBuildOCI
import RBuildRegistry
import RBuildRuntime
import RBuildSnapshots
import RBuildSolver
import RBuildSystem

/// The result of `rbuild build --check`: parse and lint a Dockerfile without building it.
public struct CheckReport: Sendable {
    public var dockerfilePath: String
    public var warnings: [LintWarning]
    public var stages: Int
    /// Warnings promoted to errors by `# check=error=true`.
    public var hasErrors: Bool { warnings.contains(where: \.isError) }
}

/// Parses, types and lints the Dockerfile at `path`. Parse and typing errors are thrown as
/// `DockerfileError`s naming the file and line.
public func checkDockerfile(at path: String, buildArgs: [String: String] = [:],
                            targetPlatform: Platform? = nil) throws -> CheckReport {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw DockerfileError(file: path, line: 0, "cannot read the Dockerfile: \(path) does not exist or is not readable")
    }
    let name = (path as NSString).lastPathComponent
    let dockerfile = try Dockerfile.parse(String(decoding: data, as: UTF8.self), fileName: name)
    let host = Platform.host
    let context = ExpansionContext(buildArgs: buildArgs, buildPlatform: host, targetPlatform: targetPlatform ?? host)
    let warnings = try Linter.check(dockerfile, context: context)
    return CheckReport(dockerfilePath: path, warnings: warnings, stages: try dockerfile.definition().stages.count)
}

/// `rbuild build --call outline`: the build args, secrets and ssh agents the target stage (and
/// the stages it reaches) of the Dockerfile `options` holds uses.
public func outlineDockerfile(_ options: BuildOptions) throws -> Outline {
    try Dockerfile.parse(options.dockerfileText, fileName: options.dockerfileName).definition()
        .outline(target: options.target, buildArgs: options.buildArgs)
}

/// `rbuild build --call targets`: the stages of the Dockerfile `options` holds, with their descriptions.
public func dockerfileTargets(_ options: BuildOptions) throws -> [TargetInfo] {
    try Dockerfile.parse(options.dockerfileText, fileName: options.dockerfileName).definition().targets()
}
