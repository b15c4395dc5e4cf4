import Foundation

/// Typed instructions: every flag parsed and validated, every argument kept unexpanded (word
/// expansion needs the build's ARG/ENV state, so it happens when a stage is evaluated).

/// A command in shell form (run by the stage's SHELL) or exec form (a JSON array).
public enum CommandForm: Sendable, Equatable {
    case shell(String)
    case exec([String])

    public var isShell: Bool { if case .shell = self { return true }; return false }
}

public struct KeyValue: Sendable, Equatable {
    public var key: String
    public var value: String
    /// Written as `key value` (the legacy form) rather than `key=value`.
    public var legacy: Bool
}

public struct ArgDeclaration: Sendable, Equatable {
    public var name: String
    /// nil: declared without a default (`ARG name`).
    public var defaultValue: String?
}

public struct From: Sendable, Equatable {
    public var image: String
    public var stageName: String?
    /// The `AS` keyword as written (for the FromAsCasing check).
    public var asKeyword: String?
    public var platform: String?
}

public struct Run: Sendable, Equatable {
    public var command: CommandForm
    /// `--mount=…`, one entry per flag, unparsed (`type=cache,target=/root/.cache`).
    public var mounts: [String]
    /// `none`, `host` or `default`.
    public var network: String?
    /// `insecure` or `sandbox`.
    public var security: String?
    public var heredocs: [Heredoc]
}

/// COPY and ADD.
public struct FileCopy: Sendable, Equatable {
    public var sources: [String]
    public var destination: String
    public var from: String?
    public var chown: String?
    public var chmod: String?
    public var link: Bool
    public var parents: Bool
    public var excludes: [String]
    /// ADD only.
    public var checksum: String?
    /// ADD only: keep `.git` when adding a Git repository.
    public var keepGitDir: Bool
    /// Heredocs used as source files (`COPY <<EOF /dest`).
    public var heredocs: [Heredoc]
}

public struct Healthcheck: Sendable, Equatable {
    /// nil: `HEALTHCHECK NONE` (disable the base image's check).
    public var test: CommandForm?
    public var interval: Duration?
    public var timeout: Duration?
    public var startPeriod: Duration?
    public var startInterval: Duration?
    public var retries: Int?
}

public indirect enum Instruction: Sendable, Equatable {
    case from(From)
    case run(Run)
    case cmd(CommandForm)
    case entrypoint(CommandForm)
    case copy(FileCopy)
    case add(FileCopy)
    case env([KeyValue])
    case arg([ArgDeclaration])
    case label([KeyValue])
    case expose([String])
    case volume([String])
    case user(String)
    case workdir(String)
    case stopSignal(String)
    case healthcheck(Healthcheck)
    case shell([String])
    case maintainer(String)
    /// The trigger instruction, checked like any other but run when the image is used as a base.
    case onbuild(Instruction, source: String)
}

/// An instruction with the node it came from (its location, keyword casing, original text).
public struct Located: Sendable, Equatable {
    public var instruction: Instruction
    public var node: Node

    public init(instruction: Instruction, node: Node) {
        self.instruction = instruction
        self.node = node
    }
}

/// One build stage: FROM … up to the next FROM.
public struct Stage: Sendable, Equatable {
    public var from: From
    public var fromNode: Node
    public var instructions: [Located]
    /// The index of this stage among all stages.
    public var index: Int

    /// The stage's name, or its index as text (how COPY --from refers to unnamed stages).
    public var reference: String { from.stageName ?? String(index) }
}

/// A Dockerfile split into its global ARGs and its stages, every instruction typed.
public struct BuildDefinition: Sendable, Equatable {
    public var globalArgs: [Located]
    public var stages: [Stage]

    /// The stage `--target` names (case-insensitive), or the last one.
    public func stage(named target: String?) -> Stage? {
        guard let target else { return stages.last }
        return stages.first { $0.from.stageName?.lowercased() == target.lowercased() }
    }
}

extension Dockerfile {
    /// Types every instruction and groups them into stages.
    public func definition() throws -> BuildDefinition {
        var globals: [Located] = []
        var stages: [Stage] = []
        for node in nodes {
            let instruction = try typed(node)
            if case .from(let from) = instruction {
                stages.append(Stage(from: from, fromNode: node, instructions: [], index: stages.count))
                continue
            }
            let located = Located(instruction: instruction, node: node)
            if stages.isEmpty {
                guard case .arg = instruction else {
                    throw error(node, "no build stage in current context: \(node.keyword.uppercased()) before the first FROM (only ARG may come before it)")
                }
                globals.append(located)
            } else {
                stages[stages.count - 1].instructions.append(located)
            }
        }
        if stages.isEmpty, let last = nodes.last {
            throw error(last, "the Dockerfile has no FROM instruction")
        }
        return BuildDefinition(globalArgs: globals, stages: stages)
    }

    func error(_ node: Node, _ message: String) -> DockerfileError {
        DockerfileError(file: fileName, line: node.range.startLine, message)
    }

    /// The typed form of one node.
    public func typed(_ node: Node) throws -> Instruction {
        let cmd = node.command
        guard let spec = flagSpecs[cmd] else {
            let suggestion = closest(cmd, among: Array(flagSpecs.keys)).map { " (did you mean \($0.uppercased())?)" } ?? ""
            throw error(node, "unknown instruction: \(node.keyword.uppercased())\(suggestion)")
        }
        let flags = try parseFlags(node, spec)
        let w = node.words
        func need(_ n: Int, _ what: String) throws {
            if w.count < n { throw error(node, "\(cmd.uppercased()) requires \(what)") }
        }
        func command() throws -> CommandForm {
            if node.isJSON { return .exec(w) }
            guard let text = w.first else { throw error(node, "\(cmd.uppercased()) requires at least one argument") }
            return .shell(text)
        }
        switch cmd {
        case "from":
            guard w.count == 1 || (w.count == 3 && w[1].lowercased() == "as") else {
                throw error(node, "FROM requires either one or three arguments (FROM image [AS name])")
            }
            if w.count == 3, !isValidStageName(w[2]) {
                throw error(node, "invalid name for build stage: \"\(w[2])\", name can't start with a number or contain symbols")
            }
            return .from(From(image: w[0], stageName: w.count == 3 ? w[2] : nil, asKeyword: w.count == 3 ? w[1] : nil,
                              platform: flags.values["platform"]))
        case "run":
            if !node.isJSON && w.isEmpty && node.heredocs.isEmpty {
                throw error(node, "RUN requires at least one argument")
            }
            if let n = flags.values["network"], !["none", "host", "default"].contains(n) {
                throw error(node, "unsupported network mode \"\(n)\" (expected none, host or default)")
            }
            if let s = flags.values["security"], !["insecure", "sandbox"].contains(s) {
                throw error(node, "unsupported security mode \"\(s)\" (expected insecure or sandbox)")
            }
            return .run(Run(command: node.isJSON ? .exec(w) : .shell(w.first ?? ""), mounts: flags.lists["mount"] ?? [],
                            network: flags.values["network"], security: flags.values["security"], heredocs: node.heredocs))
        case "cmd":
            return .cmd(node.isJSON ? .exec(w) : try command())
        case "entrypoint":
            return .entrypoint(node.isJSON ? .exec(w) : try command())
        case "copy", "add":
            let minimum = node.heredocs.isEmpty ? 2 : 1
            guard w.count >= minimum else {
                throw error(node, "\(cmd.uppercased()) requires at least two arguments, but only \(w.count == 0 ? "none was" : "one was") provided. Destination could not be determined")
            }
            if let m = flags.values["chmod"], !m.isEmpty, UInt32(m, radix: 8) == nil, !m.contains(where: { "ugoa+-=rwxXst,".contains($0) }) {
                throw error(node, "invalid --chmod=\(m): expected an octal mode such as 0755 or a symbolic one such as u=rwx,go=rx")
            }
            let copy = FileCopy(sources: Array(w.dropLast()), destination: w.last!, from: flags.values["from"],
                                chown: flags.values["chown"], chmod: flags.values["chmod"], link: flags.bools["link"] ?? false,
                                parents: flags.bools["parents"] ?? false, excludes: flags.lists["exclude"] ?? [],
                                checksum: flags.values["checksum"], keepGitDir: flags.bools["keep-git-dir"] ?? false,
                                heredocs: node.heredocs)
            return cmd == "copy" ? .copy(copy) : .add(copy)
        case "env", "label":
            if w.isEmpty { throw error(node, "\(cmd.uppercased()) requires at least one argument") }
            // The parser gives triplets: key, value, and "=" (or "" for the legacy `KEY value` form).
            var pairs: [KeyValue] = []
            for i in stride(from: 0, to: w.count - 1, by: 3) {
                if w[i].isEmpty { throw error(node, "\(cmd.uppercased()) names can not be blank") }
                pairs.append(KeyValue(key: w[i], value: w[i + 1], legacy: (i + 2 < w.count ? w[i + 2] : "") != "="))
            }
            return cmd == "env" ? .env(pairs) : .label(pairs)
        case "arg":
            if w.isEmpty { throw error(node, "ARG requires at least one argument") }
            return .arg(try w.map { word in
                let parts = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(parts[0])
                guard !name.isEmpty else { throw error(node, "ARG names can not be blank") }
                return ArgDeclaration(name: name, defaultValue: parts.count == 2 ? String(parts[1]) : nil)
            })
        case "expose":
            try need(1, "at least one argument")
            return .expose(w)
        case "volume":
            try need(1, "at least one argument")
            if w.contains(where: { $0.trimmingCharacters(in: .whitespaces).isEmpty }) {
                throw error(node, "VOLUME specified can not be an empty string")
            }
            return .volume(w)
        case "user", "workdir", "stopsignal", "maintainer":
            guard let value = w.first, !value.isEmpty else {
                throw error(node, "\(cmd.uppercased()) requires exactly one argument")
            }
            switch cmd {
            case "user": return .user(value)
            case "workdir": return .workdir(value)
            case "stopsignal": return .stopSignal(value)
            default: return .maintainer(value)
            }
        case "shell":
            guard node.isJSON else { throw error(node, "SHELL requires the arguments to be in JSON form") }
            guard !w.isEmpty else { throw error(node, "SHELL requires at least one argument") }
            return .shell(w)
        case "healthcheck":
            try need(1, "at least one argument (CMD … or NONE)")
            let kind = w[0].uppercased()
            if kind == "NONE" {
                guard w.count == 1, flags.values.isEmpty else {
                    throw error(node, "HEALTHCHECK NONE takes no other arguments")
                }
                return .healthcheck(Healthcheck(test: nil))
            }
            guard kind == "CMD" else {
                throw error(node, "unknown type \"\(w[0])\" in HEALTHCHECK (try CMD)")
            }
            guard w.count > 1 else { throw error(node, "missing command after HEALTHCHECK CMD") }
            var h = Healthcheck(test: node.isJSON ? .exec(Array(w.dropFirst())) : .shell(w[1]))
            func duration(_ name: String) throws -> Duration? {
                guard let text = flags.values[name] else { return nil }
                guard let d = parseGoDuration(text), d >= .zero else {
                    throw error(node, "invalid --\(name)=\(text): expected a duration such as 30s or 1m30s")
                }
                if d != .zero && d < .milliseconds(1) {
                    throw error(node, "--\(name) cannot be less than 1ms")
                }
                return d
            }
            h.interval = try duration("interval")
            h.timeout = try duration("timeout")
            h.startPeriod = try duration("start-period")
            h.startInterval = try duration("start-interval")
            if let r = flags.values["retries"] {
                guard let n = Int(r), n >= 0 else { throw error(node, "invalid --retries=\(r): expected a whole number") }
                h.retries = n
            }
            return .healthcheck(h)
        case "onbuild":
            guard case .instruction(let inner)? = node.args.first else {
                throw error(node, "ONBUILD requires at least one argument")
            }
            switch inner.command {
            case "onbuild": throw error(node, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            case "from", "maintainer": throw error(node, "\(inner.keyword.uppercased()) isn't allowed as an ONBUILD trigger")
            default: break
            }
            var located = inner
            located.range = node.range
            return .onbuild(try typed(located), source: inner.original)
        default:
            throw error(node, "unknown instruction: \(node.keyword.uppercased())")
        }
    }

    struct ParsedFlags {
        var values: [String: String] = [:]
        var bools: [String: Bool] = [:]
        var lists: [String: [String]] = [:]
    }

    func parseFlags(_ node: Node, _ spec: [String: FlagKind]) throws -> ParsedFlags {
        var out = ParsedFlags()
        for raw in node.flags {
            let body = raw.hasPrefix("--") ? String(raw.dropFirst(2)) : raw
            let name = String(body.prefix(while: { $0 != "=" }))
            let value: String? = body.count > name.count ? String(body.dropFirst(name.count + 1)) : nil
            guard let kind = spec[name.lowercased()] else {
                let hint = closest(name, among: Array(spec.keys)).map { " (did you mean --\($0)?)" } ?? ""
                throw error(node, "unknown flag: --\(name)\(hint)")
            }
            let key = name.lowercased()
            switch kind {
            case .value:
                guard let value else { throw error(node, "missing a value on flag: --\(name)") }
                if out.values[key] != nil { throw error(node, "duplicate flag specified: --\(name)") }
                out.values[key] = value
            case .list:
                guard let value else { throw error(node, "missing a value on flag: --\(name)") }
                out.lists[key, default: []].append(value)
            case .bool:
                switch value?.lowercased() {
                case nil, "true": out.bools[key] = true
                case "false": out.bools[key] = false
                default: throw error(node, "expecting boolean value for flag --\(name), not: \(value!)")
                }
            }
        }
        return out
    }
}

enum FlagKind { case value, bool, list }

/// The flags each instruction accepts.
let flagSpecs: [String: [String: FlagKind]] = [
    "from": ["platform": .value],
    "run": ["mount": .list, "network": .value, "security": .value],
    "copy": ["from": .value, "chown": .value, "chmod": .value, "link": .bool, "parents": .bool, "exclude": .list],
    "add": ["chown": .value, "chmod": .value, "link": .bool, "checksum": .value, "keep-git-dir": .bool, "exclude": .list],
    "healthcheck": ["interval": .value, "timeout": .value, "start-period": .value, "start-interval": .value, "retries": .value],
    "cmd": [:], "entrypoint": [:], "env": [:], "arg": [:], "label": [:], "expose": [:], "volume": [:],
    "user": [:], "workdir": [:], "stopsignal": [:], "shell": [:], "maintainer": [:], "onbuild": [:],
]

/// Stage names: a letter first, then letters, digits, `-`, `_` and `.` (BuildKit's rule).
func isValidStageName(_ s: String) -> Bool {
    guard let first = s.first, first.isASCII, first.isLetter else { return false }
    return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
}

/// The candidate within edit distance 2 of `word`, for "did you mean" hints.
func closest(_ word: String, among candidates: [String]) -> String? {
    let w = Array(word.lowercased())
    var best: (String, Int)?
    for c in candidates.sorted() {
        let d = editDistance(w, Array(c))
        if d <= 2 && d < w.count, best == nil || d < best!.1 { best = (c, d) }
    }
    return best?.0
}

func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    // Optimal string alignment: insertions, deletions, substitutions and adjacent swaps
    // ("form" is one edit from "from").
    var d = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { d[i][0] = i }
    for j in 0...b.count { d[0][j] = j }
    if a.isEmpty || b.isEmpty { return d[a.count][b.count] }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
            }
        }
    }
    return d[a.count][b.count]
}

/// Go's time.ParseDuration: "300ms", "1.5h", "2h45m", "0".
func parseGoDuration(_ text: String) -> Duration? {
    if text == "0" { return .zero }
    var s = Substring(text)
    var total = 0.0
    var any = false
    let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
    while !s.isEmpty {
        let num = s.prefix(while: { $0.isNumber || $0 == "." })
        guard !num.isEmpty, let v = Double(num) else { return nil }
        s = s.dropFirst(num.count)
        guard let unit = units.first(where: { s.hasPrefix($0.0) && !(($0.0 == "m") && s.hasPrefix("ms")) }) else { return nil }
        s = s.dropFirst(unit.0.count)
        total += v * unit.1
        any = true
    }
    guard any else { return nil }
    return .nanoseconds(Int64((total * 1e9).rounded()))
}
