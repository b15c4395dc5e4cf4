import ArgumentParser
import Foundation
import RBuild

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "What this host allows an unprivileged rbuild to do, and why."
    )

    @Option(name: .long, help: "text (default) or json.")
    var format: String = "text"

    func run() throws {
        let report = HostReport.gather()
        switch format {
        case "json":
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        case "text":
            print("rbuild on Linux \(report.kernel) (\(report.architecture)), user \(report.user) (uid \(report.uid))")
            print("identity mapping: \(report.idMapping.rawValue): \(report.idMappingReason)")
            if let c = report.isolation {
                print("isolation: \(c.isolation.rawValue): \(c.reason)" + (c.warning.map { "; \($0)" } ?? ""))
            } else {
                print("isolation: none: \(report.isolationProblem ?? "")")
            }
            let width = report.checks.map(\.name.count).max() ?? 0
            for c in report.checks {
                let name = c.name.padding(toLength: width, withPad: " ", startingAt: 0)
                print("  \(name)  \(c.ok ? "yes" : "no ")  \(c.detail)")
            }
            print("snapshotters:")
            let tasks = SandboxTasks()
            // For the default state directory (its filesystem decides where overlay upper directories go).
            let stateDirectory = StateDirectory.defaultPath
            try? FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
            let snapshotters = Snapshotters.availability(tasks: tasks, stateDirectory: stateDirectory)
            for a in snapshotters {
                print("  \(a.kind.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0))  \(a.available ? "yes" : "no ")  \(a.detail)")
            }
            if let chosen = try? Snapshotters.choose(nil, known: snapshotters, tasks: tasks, stateDirectory: stateDirectory) {
                print("  used: \(chosen.kind) (\(chosen.reason))")
            }
            print("platforms:")
            let pw = report.platforms.map(\.platform.count).max() ?? 0
            for p in report.platforms {
                print("  \(p.platform.padding(toLength: pw, withPad: " ", startingAt: 0))  \(p.supported ? "yes" : "no ")  \(p.how)")
            }
        default:
            throw RuntimeError(.badOption, "--format \(format): expected text or json")
        }
    }
}
