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
        version: rbuildVersion,
        subcommands: [BuildCommand.self, BakeCommand.self, RunCommand.self, ImportCommand.self, ImagesCommand.self, InspectCommand.self,
                      SaveCommand.self, LoadCommand.self, RmiCommand.self, PruneCommand.self, DuCommand.self, CheckCommand.self, PullCommand.self,
                      PushCommand.self, LoginCommand.self, LogoutCommand.self, InfoCommand.self, HistoryCommand.self, TagCommand.self,
                      BuilderCommand.self, ImagetoolsCommand.self, NodeBuildCommand.self]
    )

    public init() {}

    /// The commands that read or remove trees made in sandboxes, and so run in rbuild's own user
    /// namespace with the sandboxes' identity (see UserNamespace), whatever their arguments: save,
    /// push and check too, since a built layer may be packed from its snapshot (LayerRecipe).
    /// The others only move blobs the user owns and skip the extra process; `run` and `bake`
    /// enter it when their arguments say they will run or build.
    static let insideCommands: [ParsableCommand.Type] = [BuildCommand.self, PruneCommand.self, SaveCommand.self, PushCommand.self,
                                                         CheckCommand.self, NodeBuildCommand.self]

    /// Parses the arguments, runs the command, and turns any error into one `rbuild: …` line
    /// and an exit status.
    public static func runMain(_ arguments: [String]? = nil) -> Never {
        // `rbuild --version` answers before ArgumentParser builds its tree of every command's
        // options (a few milliseconds of reflection): scripts call it to probe for rbuild.
        // The text is what ArgumentParser prints for it.
        if (arguments ?? Array(CommandLine.arguments.dropFirst())) == ["--version"] {
            var line = rbuildVersion + "\n"
            line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
            Glibc.exit(0)
        }
        // The commands that always run in rbuild's own user namespace and need nothing done
        // first in this process enter it before parsing: the inner process parses, and reports a
        // mistake, just as this one would, and the parse here (about 4 ms of ArgumentParser's
        // reflection) is saved. A build does only while no builder is stored, since a builder's
        // nodes are connected from this process.
        var entered = false
        if arguments == nil, let first = CommandLine.arguments.dropFirst().first,
           let kind = insideCommands.first(where: { $0.configuration.commandName == first }),
           kind != BuildCommand.self || BuilderStore().onlyDefault {
            UserNamespace.enter(arguments: CommandLine.arguments)
            entered = true
        }
        var command: ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            exit(withError: error)
        }
        // A build on remote nodes starts ssh first, as the user (see BuildCommand.connectNodes).
        var nodeFDs: [Int32] = []
        if let build = command as? BuildCommand {
            do { nodeFDs = try build.connectNodes() } catch let e as any RenderableError {
                printError(e.description)
                Glibc.exit(e.exitStatus)
            } catch {
                exit(withError: error)
            }
        }
        // `run --rootfs DIR` reads and removes nothing a sandbox made (what the command writes in
        // DIR stays there for the caller; the scratch files are rbuild's own), so it runs the
        // sandbox from here and saves a second start of this program.
        // (Entered above already, or found impossible there: then this process goes on as before.)
        if !entered, insideCommands.contains(where: { $0 == type(of: command) })
            || (command as? RunCommand).map({ $0.rootfs == nil }) == true || (command as? BakeCommand)?.builds == true {
            UserNamespace.enter(arguments: CommandLine.arguments, handOver: nodeFDs)
        }
        do {
            try command.run()
            Glibc.exit(0)
        } catch let e as ExitCode {
            Glibc.exit(e.rawValue)
        } catch let e as any RenderableError {
            printError(e.description)
            Glibc.exit(e.exitStatus)
        } catch {
            // ArgumentParser's own errors (help, validation) and anything unforeseen.
            exit(withError: error)
        }
    }
}

/// An error of one of rbuild's layers: rendered as one `rbuild: …` line.
protocol RenderableError: Error, CustomStringConvertible {
    var exitStatus: Int32 { get }
}

extension RuntimeError: RenderableError {
    var exitStatus: Int32 { exitCode }
}

extension OCIError: RenderableError {
    var exitStatus: Int32 { 1 }
}

extension DockerfileError: RenderableError {
    var exitStatus: Int32 { 1 }
}

func printError(_ message: String) {
    var line = "rbuild: " + message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

extension PlatformError: RenderableError {
    var exitStatus: Int32 { 1 }
}

extension SnapshotError: RenderableError {
    var exitStatus: Int32 { 1 }
}

extension SystemError: RenderableError {
    var exitStatus: Int32 { 1 }
}

/// A hostile file where `rbuild run` looks the user up: the container could not be set up.
extension ImageFileError: RenderableError {
    var exitStatus: Int32 { 125 }
}
