import Foundation

/// What `--call outline` shows (BuildKit's `outline` subrequest): the build args, secrets and ssh
/// agents the target stage and the stages it reaches use, with their defaults and the comments
/// written above them.
public struct Outline: Sendable, Equatable, Codable {
    public struct Arg: Sendable, Equatable, Codable {
        public var name: String
        /// The value a build would take: a `--build-arg`, else the default, else nil.
        public var value: String?
        public var description: String
    }
    public struct Mount: Sendable, Equatable, Codable {
        public var id: String
        public var required: Bool
    }
    public var target: String?
    public var description: String
    public var args: [Arg] = []
    public var secrets: [Mount] = []
    public var ssh: [Mount] = []
}

/// One stage as `--call targets` lists it.
public struct TargetInfo: Sendable, Equatable, Codable {
    public var name: String
    /// The comment right above its FROM (the name at its start left out, as BuildKit does).
    public var description: String
    public var base: String
    /// The stage a build without `--target` builds (the last).
    public var isDefault: Bool
}

/// The args a build sets itself, which BuildKit's outline leaves out.
let automaticArgs: Set<String> = ["TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                                  "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"]

/// The comment lines above an instruction as one description: `# NAME does x` describes NAME
/// as "does x".
func describe(_ comments: [String], name: String?) -> String {
    var text = comments.joined(separator: " ").trimmingCharacters(in: .whitespaces)
    if let name, text.hasPrefix(name + " ") { text = String(text.dropFirst(name.count + 1)) }
    return text
}

extension BuildDefinition {
    /// Every named stage (and the last, the default, named or not), in order.
    public func targets() -> [TargetInfo] {
        stages.enumerated().compactMap { i, s in
            let isDefault = i == stages.count - 1
            guard s.from.stageName != nil || isDefault else { return nil }
            return TargetInfo(name: s.from.stageName ?? "(last stage)", description: describe(s.fromNode.comments, name: s.from.stageName),
                              base: s.from.image, isDefault: isDefault)
        }
    }

    /// The outline of the stage `target` names (nil: the last), given the `--build-arg`s.
    public func outline(target: String?, buildArgs: [String: String] = [:]) throws -> Outline {
        guard let stage = stage(named: target) else {
            throw DockerfileError(file: "Dockerfile", line: 0, "target stage \"\(target ?? "")\" could not be found")
        }
        let reached = reachedStages(from: stage)
        var outline = Outline(target: stage.from.stageName, description: describe(stage.fromNode.comments, name: stage.from.stageName))
        var globals: [String: (ArgDeclaration, Node)] = [:]
        for g in globalArgs { if case .arg(let decls) = g.instruction { for d in decls { globals[d.name] = (d, g.node) } } }
        var seen = Set<String>()
        func add(_ name: String, _ declared: ArgDeclaration?, _ node: Node?) {
            guard !automaticArgs.contains(name), seen.insert(name).inserted else { return }
            let global = globals[name]
            let value = buildArgs[name] ?? declared?.defaultValue ?? global?.0.defaultValue
            var text = node.map { describe($0.comments, name: name) } ?? ""
            if text.isEmpty, let g = global { text = describe(g.1.comments, name: name) }
            outline.args.append(.init(name: name, value: value, description: text))
        }
        // Global args a reached stage's FROM names, then each reached stage's own, in file order.
        for g in globalArgs {
            guard case .arg(let decls) = g.instruction else { continue }
            for d in decls where reached.contains(where: { mentions($0.from.image + " " + ($0.from.platform ?? ""), d.name) }) {
                add(d.name, d, g.node)
            }
        }
        var secrets: [String: Bool] = [:], ssh: [String: Bool] = [:]
        var secretOrder: [String] = [], sshOrder: [String] = []
        for s in reached {
            for located in s.instructions {
                switch located.instruction {
                case .arg(let decls):
                    for d in decls { add(d.name, d, located.node) }
                case .run(let run):
                    for text in run.mounts {
                        guard let m = try? RunMountFlag.parse(text, expand: { $0 }) else { continue }
                        switch m.type {
                        case .secret:
                            let id = m.id ?? m.target.map { ($0 as NSString).lastPathComponent } ?? ""
                            if secrets[id] == nil { secretOrder.append(id) }
                            secrets[id] = (secrets[id] ?? false) || (m.required ?? false)
                        case .ssh:
                            let id = m.id ?? "default"
                            if ssh[id] == nil { sshOrder.append(id) }
                            ssh[id] = (ssh[id] ?? false) || (m.required ?? false)
                        default: break
                        }
                    }
                default: break
                }
            }
        }
        outline.secrets = secretOrder.map { .init(id: $0, required: secrets[$0]!) }
        outline.ssh = sshOrder.map { .init(id: $0, required: ssh[$0]!) }
        return outline
    }

    /// `stage` and every stage it builds on or copies from, in file order.
    func reachedStages(from stage: Stage) -> [Stage] {
        var reached = Set<Int>()
        var todo = [stage.index]
        func named(_ ref: String?) -> Int? {
            guard let ref else { return nil }
            if let n = Int(ref), n < stages.count { return n }
            return stages.first { $0.from.stageName?.lowercased() == ref.lowercased() }?.index
        }
        while let i = todo.popLast() {
            guard reached.insert(i).inserted else { continue }
            let s = stages[i]
            var refs: [String?] = [s.from.image]
            for located in s.instructions {
                switch located.instruction {
                case .copy(let c), .add(let c): refs.append(c.from)
                case .run(let run): refs += run.mounts.map { (try? RunMountFlag.parse($0, expand: { $0 }))?.from }
                default: break
                }
            }
            todo += refs.compactMap(named).filter { $0 < stages.count }
        }
        return stages.filter { reached.contains($0.index) }
    }
}

/// Whether `text` refers to `$name` or `${name…}`.
func mentions(_ text: String, _ name: String) -> Bool {
    text.contains("${" + name + "}") || text.contains("${" + name + ":") || text.range(of: "\\$" + name + "\\b", options: .regularExpression) != nil
}
