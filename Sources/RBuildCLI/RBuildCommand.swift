import ArgumentParser
import RBuild
public struct RBuildCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "rbuild")
    public init() {}
}
