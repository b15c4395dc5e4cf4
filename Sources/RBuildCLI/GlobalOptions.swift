import ArgumentParser

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "State directory (default: $XDG_DATA_HOME/rbuild).")
    var root: String?
}
