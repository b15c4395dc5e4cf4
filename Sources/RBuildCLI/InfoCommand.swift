import ArgumentParser
import RBuild

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "What this host allows, and why.")
    func run() throws {}
}
