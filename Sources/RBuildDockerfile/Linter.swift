import Foundation

/// Build checks with BuildKit's rule names and messages, so that a `# check=` line written for
/// docker buildx means the same here.
public struct LintWarning: Sendable, Equatable, CustomStringConvertible {
    public var rule: String
    public var message: String
    public var range: SourceRange
    /// Promoted to an error by `# check=error=true`.
    public var isError: Bool

    public var description: String { "\(rule): \(message)" }
}

/// `# check=skip=Rule1,Rule2;error=true` (or `skip=all`).
public struct CheckConfig: Sendable, Equatable {
    public var skip: Set<String> = []
    public var skipAll = false
    public var errorOnWarnings = false

    public init() {}

    public init(directive: String?) throws {
        guard let directive else { return }
        for part in directive.split(separator: ";") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { throw LocalError("invalid check directive \(directive): expected skip=RULE,… and/or error=true") }
            switch kv[0].lowercased() {
            case "skip":
                let rules = kv[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                if rules.contains(where: { $0.lowercased() == "all" }) { skipAll = true } else { skip.formUnion(rules) }
            case "error":
                guard let b = Bool(kv[1].lowercased()) else { throw LocalError("invalid check directive: error=\(kv[1]) is not true or false") }
                errorOnWarnings = b
            default:
                throw LocalError("invalid check directive: unknown key \(kv[0]) (expected skip or error)")
            }
        }
    }
}

public enum Linter {
    /// Every rule this linter knows.
    public static let rules = [
        "StageNameCasing", "FromAsCasing", "JSONArgsRecommended", "UndefinedVar", "UndefinedArgInFrom",
        "DuplicateStageName", "ReservedStageName", "MaintainerDeprecated", "ConsistentInstructionCasing",
        "WorkdirRelativePath", "MultipleInstructionsDisallowed", "LegacyKeyValueFormat", "NoEmptyContinuation",
        "ExposeProtoCasing", "SecretsUsedInArgOrEnv", "RedundantTargetPlatform", "FromPlatformFlagConstDisallowed",
        "InvalidDefaultArgInFrom",
    ]

    /// Runs the checks. Parse and typing errors are thrown, not reported here.
    public static func check(_ dockerfile: Dockerfile, context: ExpansionContext) throws -> [LintWarning] {
        let config: CheckConfig
        do {
            config = try CheckConfig(directive: dockerfile.check)
        } catch let e as LocalError {
            throw DockerfileError(file: dockerfile.fileName, line: 1, e.message)
        }
        let definition = try dockerfile.definition()
        var out: [LintWarning] = []
        func warn(_ rule: String, _ message: String, _ range: SourceRange) {
            guard !config.skipAll, !config.skip.contains(rule) else { return }
            out.append(LintWarning(rule: rule, message: message, range: range, isError: config.errorOnWarnings))
        }

        for w in dockerfile.warnings {
            warn("NoEmptyContinuation", "Empty continuation line", w.range)
        }

        // Instruction casing: the majority decides.
        let keywords = dockerfile.nodes.map(\.keyword)
        let upper = keywords.filter { $0 == $0.uppercased() }.count
        let lower = keywords.filter { $0 == $0.lowercased() }.count
        let majorityUpper = upper >= lower
        for node in dockerfile.nodes {
            let k = node.keyword
            let ok = majorityUpper ? k == k.uppercased() : k == k.lowercased()
            if !ok {
                warn("ConsistentInstructionCasing",
                     "Command '\(k)' should match the case of the command majority (\(majorityUpper ? "uppercase" : "lowercase"))", node.range)
            }
        }

        let lexer = ShellLexer(escape: dockerfile.escapeToken)
        let global = try GlobalScope(definition, context: context, lexer: lexer)
        let globalDeclared = global.declared.union(context.platformArgs.keys)
        var seenNames: [String: Int] = [:]
        for located in definition.globalArgs {
            checkSecrets(located, warn)
        }

        for stage in definition.stages {
            let from = stage.from
            let range = stage.fromNode.range
            if let name = from.stageName {
                if name != name.lowercased() {
                    warn("StageNameCasing", "Stage name '\(name)' should be lowercase", range)
                }
                if ["scratch", "context"].contains(name.lowercased()) {
                    warn("ReservedStageName", "'\(name.lowercased())' is reserved and should not be used as a stage name", range)
                }
                if seenNames[name.lowercased()] != nil {
                    warn("DuplicateStageName", "Duplicate stage name '\(name)', stage names should be unique", range)
                }
                seenNames[name.lowercased()] = stage.index
            }
            if let asKeyword = from.asKeyword {
                let fromUpper = stage.fromNode.keyword == stage.fromNode.keyword.uppercased()
                let asUpper = asKeyword == asKeyword.uppercased()
                if fromUpper != asUpper {
                    warn("FromAsCasing", "'\(asKeyword)' and '\(stage.fromNode.keyword)' keywords' casing do not match", range)
                }
            }
            // FROM expands with the global scope only.
            if let r = try? lexer.expand(from.image, env: { global.lookup($0) }) {
                for name in r.unmatched.sorted() where !globalDeclared.contains(name) {
                    warn("UndefinedArgInFrom", "FROM argument '\(name)' is not declared", range)
                }
                if r.word.isEmpty || r.word.hasPrefix(":") || r.word.hasSuffix(":") {
                    let names = r.matched.union(r.unmatched).sorted().joined(separator: ", ")
                    warn("InvalidDefaultArgInFrom", "Default value for ARG \(names) results in empty or invalid base image name", range)
                }
            }
            if let platform = from.platform {
                if platform == "$TARGETPLATFORM" || platform == "${TARGETPLATFORM}" {
                    warn("RedundantTargetPlatform", "Setting platform to predefined \(platform) in FROM is redundant as this is the default behavior", range)
                } else if !platform.contains("$") {
                    warn("FromPlatformFlagConstDisallowed", "FROM --platform flag should not use constant value \"\(platform)\"", range)
                }
            }

            var scope = StageScope(global: global, context: context)
            var counts: [String: Int] = [:]
            var absoluteWorkdir = false
            // Names a stage may use without declaring: the base image's ENV is unknown here.
            for located in stage.instructions {
                let node = located.node
                let instruction: Instruction
                if case .onbuild = located.instruction { continue } else { instruction = located.instruction }
                switch instruction {
                case .cmd(let c), .entrypoint(let c):
                    let name = node.command.uppercased()
                    counts[name, default: 0] += 1
                    if c.isShell {
                        warn("JSONArgsRecommended", "JSON arguments recommended for \(name) to prevent unintended behavior related to OS signals", node.range)
                    }
                case .healthcheck:
                    counts["HEALTHCHECK", default: 0] += 1
                case .maintainer:
                    warn("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label", node.range)
                case .workdir(let dir):
                    let expanded = (try? lexer.expand(dir, env: { scope.lookup($0) }).word) ?? dir
                    if expanded.hasPrefix("/") {
                        absoluteWorkdir = true
                    } else if !absoluteWorkdir {
                        warn("WorkdirRelativePath", "Relative workdir '\(dir)' can have unexpected results if the base image changes", node.range)
                    }
                case .env(let pairs), .label(let pairs):
                    if pairs.contains(where: \.legacy) {
                        let k = node.command.uppercased()
                        warn("LegacyKeyValueFormat", "\"\(k) key=value\" should be used instead of legacy \"\(k) key value\" format", node.range)
                    }
                case .expose(let ports):
                    for p in ports where p.contains("/") && p != p.lowercased() {
                        warn("ExposeProtoCasing", "Defined protocol '\(p)' in EXPOSE instruction should be lowercase", node.range)
                    }
                default:
                    break
                }
                checkSecrets(located, warn)
                // Undefined variables in the instructions that expand their arguments.
                if expandsArguments(node.command) {
                    for word in node.words {
                        guard let r = try? lexer.expand(word, env: { scope.lookup($0) }) else { continue }
                        for name in r.unmatched.sorted() where !ExpansionContext.proxyArgs.contains(name) {
                            // A name the stage never declared may still come from the base image's ENV.
                            if scope.lookup(name) == nil && !declaresAnywhere(name, in: stage) {
                                warn("UndefinedVar", "Usage of undefined variable '$\(name)'", node.range)
                            }
                        }
                    }
                }
                // Update the scope.
                switch instruction {
                case .arg(let decls):
                    for d in decls { try? scope.declare(d, lexer: lexer) }
                case .env(let pairs):
                    for p in pairs {
                        let v = (try? lexer.expand(p.value, env: { scope.lookup($0) }).word) ?? p.value
                        scope.setEnv(p.key, v)
                    }
                default:
                    break
                }
            }
            for (name, n) in counts.sorted(by: { $0.key < $1.key }) where n > 1 {
                let last = stage.instructions.last { $0.node.command.uppercased() == name }!
                warn("MultipleInstructionsDisallowed", "Multiple \(name) instructions should not be used in the same stage because only the last one will be used", last.node.range)
            }
        }
        return out.sorted { ($0.range.startLine, $0.rule) < ($1.range.startLine, $1.rule) }
    }

    static func declaresAnywhere(_ name: String, in stage: Stage) -> Bool {
        stage.instructions.contains { l in
            switch l.instruction {
            case .arg(let d): return d.contains { $0.name == name }
            case .env(let p): return p.contains { $0.key == name }
            default: return false
            }
        }
    }

    static let secretWords = ["password", "passwd", "secret", "token", "apikey", "api_key", "auth", "credential", "private_key"]

    static func checkSecrets(_ located: Located, _ warn: (String, String, SourceRange) -> Void) {
        var names: [(String, String)] = []
        switch located.instruction {
        case .arg(let d): names = d.map { ("ARG", $0.name) }
        case .env(let p): names = p.map { ("ENV", $0.key) }
        default: return
        }
        for (kind, name) in names {
            let lower = name.lowercased()
            if secretWords.contains(where: { lower.contains($0) }) && !lower.hasSuffix("_file") && !lower.hasSuffix("_path") {
                warn("SecretsUsedInArgOrEnv", "Do not use ARG or ENV instructions for sensitive data (\(kind) \"\(name)\")", located.node.range)
            }
        }
    }
}
