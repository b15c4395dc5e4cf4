import ArgumentParser
import Foundation
import RBuild

struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "The builds of this state dir (the last \(BuildHistory.keep) are kept): ls, inspect, logs, rm.",
        subcommands: [HistoryLs.self, HistoryInspect.self, HistoryLogs.self, HistoryRm.self])
}

/// buildx's status words.
func statusWord(_ s: BuildRecord.Status) -> String {
    switch s {
    case .running: "Running"
    case .completed: "Completed"
    case .failed: "Error"
    case .canceled: "Canceled"
    }
}

/// `1m 3s`, `4.2s`.
func durationText(_ seconds: TimeInterval?) -> String {
    guard let seconds else { return "-" }
    if seconds < 60 { return String(format: "%.1fs", seconds) }
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h \(s % 3600 / 60)m" : "\(s / 60)m \(s % 60)s"
}

/// A time as buildx's history shows it (local time, to the second).
func timeText(_ date: Date) -> String {
    let f = DateFormatter()
    f.dateFormat = "yyyy-MM-dd HH:mm:ss"
    return f.string(from: date)
}

func historyJSON(_ value: some Encodable, pretty: Bool) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    e.dateEncodingStrategy = .iso8601
    return String(decoding: try e.encode(value), as: UTF8.self)
}

struct HistoryLs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the recorded builds, newest first.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "table (default) or json (one object a line).")
    var format: String = "table"

    @Flag(name: .customLong("no-trunc"), help: "Show whole ids and names.")
    var noTrunc = false

    func run() throws {
        let records = BuildHistory(layout: try StateDirectory.open(global.root).layout).list()
        switch format {
        case "json":
            for r in records { print(try historyJSON(r, pretty: false)) }
        case "table":
            func cell(_ s: String, _ width: Int) -> String {
                let t = !noTrunc && s.count > width - 2 ? String(s.prefix(width - 3)) + "…" : s
                return t.padding(toLength: max(width, t.count + 1), withPad: " ", startingAt: 0)
            }
            let idWidth = noTrunc ? 27 : 14
            print(cell("BUILD ID", idWidth) + cell("NAME", 24) + cell("STATUS", 11) + cell("CREATED AT", 21) + cell("DURATION", 10) + "STEPS")
            for r in records {
                let steps = "\(r.completedSteps)/\(r.steps)" + (r.cachedSteps > 0 ? " (\(r.cachedSteps) cached)" : "")
                print(cell(noTrunc ? r.id : String(r.id.prefix(12)), idWidth) + cell(r.name, 24) + cell(statusWord(r.status), 11)
                      + cell(timeText(r.startedAt), 21) + cell(durationText(r.duration), 10) + steps)
            }
        default:
            throw ValidationError("--format \(format): expected table or json")
        }
    }
}

struct HistoryInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show one build: what it built, how it ended, its steps (REF: an id or a prefix, ^N the N-th before the newest; default the newest).")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "pretty (default) or json.")
    var format: String = "pretty"

    @Argument(help: "An id, a unique prefix of one, or ^N (default: the newest build).")
    var ref: String?

    func run() throws {
        let r = try BuildHistory(layout: try StateDirectory.open(global.root).layout).record(ref)
        switch format {
        case "json": print(try historyJSON(r, pretty: true))
        case "pretty":
            var rows: [(String, String)] = [("ID", r.id), ("Name", r.name)]
            if let c = r.context { rows.append(("Context", c)) }
            if let d = r.dockerfile { rows.append(("Dockerfile", d)) }
            if let t = r.target { rows.append(("Target", t)) }
            rows.append(("Platforms", r.platforms.joined(separator: ", ")))
            if !r.outputs.isEmpty { rows.append(("Outputs", r.outputs.joined(separator: "; "))) }
            if !r.tags.isEmpty { rows.append(("Tags", r.tags.joined(separator: ", "))) }
            rows.append(("Status", statusWord(r.status)))
            rows.append(("Started", timeText(r.startedAt)))
            if let end = r.completedAt { rows.append(("Completed", timeText(end))) }
            rows.append(("Duration", durationText(r.duration)))
            let percent = r.steps == 0 ? 0 : r.cachedSteps * 100 / r.steps
            rows.append(("Build Steps", "\(r.completedSteps)/\(r.steps) (\(percent)% cached)"))
            if let d = r.imageDigest { rows.append(("Image", d)) }
            if r.logDroppedBytes > 0 { rows.append(("Log", "\(r.logDroppedBytes) bytes of step output not kept (past \(BuildHistory.logLimit >> 20) MiB)")) }
            for (k, v) in rows { print((k + ":").padding(toLength: 16, withPad: " ", startingAt: 0) + v) }
            if let e = r.error { print("\nError:\n" + e) }
        default:
            throw ValidationError("--format \(format): expected pretty or json")
        }
    }
}

struct HistoryLogs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print a build's logs again, as --progress plain showed them (on stdout).")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "plain (default) or rawjson.")
    var progress: String = "plain"

    @Argument(help: "An id, a unique prefix of one, or ^N (default: the newest build).")
    var ref: String?

    func run() throws {
        let history = BuildHistory(layout: try StateDirectory.open(global.root).layout)
        let r = try history.record(ref)
        let events = try history.events(of: r)
        let start = r.startedAt.timeIntervalSince1970
        switch progress {
        case "plain":
            let out = PlainProgress(fd: 1)
            for e in events { out.handle(e.event, at: start + e.time) }
        case "rawjson":
            let out = JSONProgress(fd: 1)
            for e in events { out.handle(e.event, at: start + e.time) }
        default:
            throw ValidationError("--progress \(progress): expected plain or rawjson")
        }
        if events.isEmpty && r.status != .running { printError("build \(r.id) left no log (it was killed before it ended)") }
    }
}

struct HistoryRm: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove build records (and their logs).")

    @OptionGroup var global: GlobalOptions

    @Flag(name: .long, help: "Remove every record.")
    var all = false

    @Argument(help: "Ids, unique prefixes of ids, or ^N.")
    var refs: [String] = []

    func validate() throws {
        if all == !refs.isEmpty { throw ValidationError("give the builds to remove, or --all") }
    }

    func run() throws {
        let history = BuildHistory(layout: try StateDirectory.open(global.root).layout)
        // Every reference is resolved before anything is removed (`^1` must not shift under us).
        let records = all ? history.list() : try refs.map { try history.record($0) }
        for r in records {
            try history.remove(r)
            print(r.id)
        }
    }
}
