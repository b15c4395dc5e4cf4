import ArgumentParser
import Foundation
import RBuild

struct BuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build an image from a Dockerfile (today: --check parses and lints it without building)."
    )

    @Option(name: [.short, .customLong("file")], help: "The Dockerfile (default: CONTEXT/Dockerfile).")
    var file: String?

    @Flag(name: .long, help: "Parse and run the build checks without building; exit non-zero on errors.")
    var check = false

    @Option(name: .customLong("build-arg"), help: "KEY=VALUE, as with docker buildx.")
    var buildArgs: [String] = []

    @Option(name: .long, help: "The stage to build.")
    var target: String?

    @Option(name: .long, help: "Target platform, e.g. linux/arm64.")
    var platform: String?

    @Argument(help: "The build context directory.")
    var context: String = "."

    func run() throws {
        var args: [String: String] = [:]
        for a in buildArgs {
            let kv = a.split(separator: "=", maxSplits: 1).map(String.init)
            // `--build-arg NAME` takes the value from rbuild's own environment, as buildx does.
            if kv.count == 2 { args[kv[0]] = kv[1] } else if let v = getenvString(kv[0]) { args[kv[0]] = v }
        }
        var targetPlatform: PlatformSpec?
        if let platform {
            guard let p = PlatformSpec(platform) else {
                throw RuntimeError(.badOption, "--platform \(platform): expected os/architecture[/variant], e.g. linux/arm64")
            }
            targetPlatform = p
        }
        guard check else {
            throw RuntimeError(.badOption, "rbuild build can only --check a Dockerfile so far: building images lands with the solver (issue: rbuild build)")
        }
        let path = file ?? context + "/Dockerfile"
        let report = try checkDockerfile(at: path, buildArgs: args, targetPlatform: targetPlatform)
        if let target, report.stages > 0 {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            let definition = try Dockerfile.parse(text).definition()
            if definition.stage(named: target) == nil {
                throw RuntimeError(.badOption, "target stage \"\(target)\" could not be found in \(path)")
            }
        }
        let name = (path as NSString).lastPathComponent
        for w in report.warnings {
            print("\(w.isError ? "ERROR" : "WARN"): \(w.rule): \(w.message) (\(name):\(w.range.startLine))")
        }
        let n = report.warnings.count
        print(n == 0 ? "Check complete, no warnings found." : "Check complete, \(n) warning\(n == 1 ? "" : "s") found.")
        if report.hasErrors { throw ExitCode(1) }
    }
}
