import ArgumentParser
import RBuild
#if canImport(Glibc)
import Glibc
#endif

/// The `rbuild` command line. Errors from any layer are rendered here, in one place.
public struct RBuildCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "rbuild",
        abstract: "Build container images from Dockerfiles as an ordinary user: no daemon, no root.",
        subcommands: [RunCommand.self, InfoCommand.self]
    )

    public init() {}

    /// Parses the arguments, runs the command, and turns any error into one `rbuild: …` line
    /// and an exit status.
    public static func runMain(_ arguments: [String]? = nil) -> Never {
        var command: ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            exit(withError: error)
        }
        do {
            try command.run()
            Glibc.exit(0)
        } catch let e as ExitCode {
            Glibc.exit(e.rawValue)
        } catch let e as RuntimeError {
            printError(e.description)
            Glibc.exit(e.exitCode)
        } catch let e as CleanExit {
            exit(withError: e)
        } catch let e as ValidationError {
            exit(withError: e)
        } catch {
            printError(String(describing: error))
            Glibc.exit(1)
        }
    }
}

func printError(_ message: String) {
    var line = "rbuild: " + message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
