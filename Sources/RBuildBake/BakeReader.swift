import Foundation
import RBuildSystem

// HCL/JSON bodies → target specs, groups and variables; then inherits and `--set` → resolved
// targets. Follows buildx's hclparser.Parse and bake.ReadTargets.

struct BakeReader {
    var specs: [String: TargetSpec] = [:]
    var order: [String] = []
    var groups: [String: [String]] = [:]
    var groupDescriptions: [String: String] = [:]
    var variables: [BakeVariable] = []
    let environment: [String: String]
    let now: () -> Date

    init(environment: [String: String], now: @escaping () -> Date) {
        self.environment = environment
        self.now = now
    }

    mutating func add(_ spec: TargetSpec) {
        if specs[spec.name] != nil { specs[spec.name]!.merge(spec) } else {
            specs[spec.name] = spec
            order.append(spec.name)
        }
    }

    mutating func addGroup(_ name: String, _ members: [String], description: String?) {
        groups[name] = TargetSpec.dedupe((groups[name] ?? []) + members)
        if let d = description, !d.isEmpty { groupDescriptions[name] = d }
    }

    static func validName(_ n: String) -> Bool {
        !n.isEmpty && n.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
    }

    // MARK: HCL and JSON

    mutating func read(_ bodies: [Body]) throws {
        let ev = Evaluator(environment: environment, now: now)
        ev.builtins = ["BAKE_CMD_CONTEXT": "cwd://", "BAKE_LOCAL_PLATFORM": "linux/\(Self.localArch)"]
        var targetBlocks: [Block] = []
        var groupBlocks: [Block] = []
        var variableOrder: [String] = []
        for body in bodies {
            for a in body.attributes { ev.attributes[a.name] = a }
            for b in body.blocks {
                guard b.labels.count == 1 else {
                    throw b.pos.error("a \(b.type) block takes one name, as \(b.type) \"NAME\" { … }")
                }
                let name = b.labels[0]
                switch b.type {
                case "variable":
                    for a in b.body.attributes where !["default", "description", "type", "validation"].contains(a.name) {
                        throw a.pos.error("variable \(name): unknown attribute \"\(a.name)\" (known: default, description, type)")
                    }
                    let desc = try b.body.attribute("description").map { try Self.literalString($0, ev) }
                    if !variableOrder.contains(name) { variableOrder.append(name) }
                    ev.variables[name] = Evaluator.VariableDef(
                        name: name, defaultExpr: b.body.attribute("default")?.expr,
                        type: try b.body.attribute("type").map { try Self.varType($0.expr) },
                        description: desc, pos: b.pos)
                case "function":
                    guard let params = b.body.attribute("params"), let result = b.body.attribute("result") else {
                        throw b.pos.error("function \(name) needs params = [...] and result = …")
                    }
                    guard case .tuple(let items) = params.expr.kind else { throw params.pos.error("function \(name): params must be a list of names") }
                    let names = try items.map { e -> String in
                        guard case .variable(let n) = e.kind else { throw e.pos.error("function \(name): each parameter must be a bare name") }
                        return n
                    }
                    var variadic: String?
                    if let v = b.body.attribute("variadic_params") {
                        guard case .variable(let n) = v.expr.kind else { throw v.pos.error("function \(name): variadic_params must be a bare name") }
                        variadic = n
                    }
                    ev.functions[name] = Evaluator.FunctionDef(params: names, variadic: variadic, result: result.expr, pos: b.pos)
                case "target": targetBlocks.append(b)
                case "group": groupBlocks.append(b)
                default:
                    throw b.pos.error("unknown block type \"\(b.type)\" (bake knows target, group, variable, function)")
                }
            }
        }
        for a in ev.attributes.values where ["target", "group", "variable", "function"].contains(a.name) {
            throw a.pos.error("\(a.name) is a block, not an attribute")
        }

        // Target blocks are evaluated once per matrix combination; `target.X.attr` reads a
        // block's own attribute (before inherits, as in buildx) on demand.
        var blockValues: [String: [String: HCLValue]] = [:]
        var evaluating: Set<String> = []
        let byName = Dictionary(targetBlocks.map { ($0.labels[0], $0) }) { _, b in b }
        let groupsByName = Dictionary(groupBlocks.map { ($0.labels[0], $0) }) { _, b in b }
        ev.blockReference = { [unowned ev] type, name, attr, pos in
            let block = type == "target" ? byName[name] : groupsByName[name]
            guard let block else { throw pos.error("there is no \(type) named \"\(name)\"") }
            if block.body.attribute("matrix") != nil {
                throw pos.error("\(type).\(name) has a matrix: refer to one of its expanded targets by its name")
            }
            let key = "\(type).\(name).\(attr ?? "")"
            if let cached = blockValues[type + "." + name]?[attr ?? ""] { return cached }
            guard evaluating.insert(key).inserted else {
                throw pos.error("reference cycle through \(type).\(name)\(attr.map { "." + $0 } ?? "")")
            }
            defer { evaluating.remove(key) }
            var v: HCLValue
            if let attr {
                v = try block.body.attribute(attr).map { try ev.eval($0.expr, [:]) } ?? .null
            } else {
                var o: [String: HCLValue] = [:]
                for a in block.body.attributes where a.name != "matrix" { o[a.name] = try ev.eval(a.expr, [:]) }
                v = .object(o)
            }
            blockValues[type + "." + name, default: [:]][attr ?? ""] = v
            return v
        }

        for def in variableOrder.compactMap({ ev.variables[$0] }) where ev.builtins[def.name] == nil {
            let v = try ev.global(def.name, at: def.pos)
            variables.removeAll { $0.name == def.name }
            variables.append(BakeVariable(name: def.name, value: v.isNull ? nil : (v.asString ?? v.jsonText), description: def.description))
        }

        var renamed: [(String, [String])] = []
        for b in targetBlocks {
            let label = b.labels[0]
            guard Self.validName(label) else {
                throw b.pos.error("invalid target name \"\(label)\": only letters, digits, _ and - are allowed")
            }
            var names: [String] = []
            for scope in try matrixScopes(b, ev) {
                var name = label
                if let n = b.body.attribute("name") {
                    guard b.body.attribute("matrix") != nil else { throw n.pos.error("target \(label): name requires matrix") }
                    let v = try ev.eval(n.expr, scope)
                    guard let s = v.asString else { throw n.pos.error("target \(label): name must be a string, not a \(v.typeName)") }
                    guard Self.validName(s) else {
                        throw n.pos.error("target \(label): the matrix gives the name \"\(s)\": only letters, digits, _ and - are allowed (use sanitize() or replace())")
                    }
                    name = s
                }
                if names.contains(name) {
                    throw b.pos.error("target \(label): the matrix gives the name \"\(name)\" twice; make name = … differ for each combination")
                }
                names.append(name)
                add(try decodeTarget(b.body, name: name, scope: scope, ev))
            }
            if names != [label] { renamed.append((label, names)) }
        }
        for b in groupBlocks {
            let label = b.labels[0]
            for a in b.body.attributes where !["targets", "description"].contains(a.name) {
                throw a.pos.error("group \(label): unknown attribute \"\(a.name)\" (a group has targets and description)")
            }
            let members = try b.body.attribute("targets").flatMap { try stringList($0, [:], ev) } ?? []
            let desc = try b.body.attribute("description").flatMap { try string($0, [:], ev) }
            addGroup(label, members, description: desc)
        }
        // A matrix target's own name stands for all its targets (buildx makes it a group).
        for (label, names) in renamed { addGroup(label, names, description: nil) }
    }

    static var localArch: String {
        #if arch(arm64)
        "arm64"
        #else
        "amd64"
        #endif
    }

    static func literalString(_ a: Attribute, _ ev: Evaluator) throws -> String {
        let v = try ev.eval(a.expr, [:])
        guard let s = v.asString else { throw a.pos.error("\(a.name) must be a string, not a \(v.typeName)") }
        return s
    }

    static func varType(_ e: Expr) throws -> VarType {
        switch e.kind {
        case .variable("string"): return .string
        case .variable("number"): return .number
        case .variable("bool"): return .bool
        case .variable("any"): return .any
        case .call("list", _, _), .call("set", _, _), .call("tuple", _, _): return .list
        case .call("map", _, _), .call("object", _, _): return .map
        default: throw e.pos.error("unsupported variable type: use string, number, bool, any, list(…) or map(…)")
        }
    }

    /// One scope per matrix combination: keys in sorted order, later keys varying slowest, as
    /// buildx builds its eval contexts.
    /// Targets one matrix may make: ten keys of ten values asked for ten billion.
    static let maxMatrix = 1024

    private func matrixScopes(_ b: Block, _ ev: Evaluator) throws -> [Scope] {
        guard let m = b.body.attribute("matrix") else { return [[:]] }
        let v = try ev.eval(m.expr, [:])
        guard case .object(let o) = v else { throw m.pos.error("target \(b.labels[0]): matrix must be a map of lists") }
        var scopes: [Scope] = [[:]]
        for key in o.keys.sorted() {
            guard case .list(let values) = o[key]! else {
                throw m.pos.error("target \(b.labels[0]): matrix values must be lists (\(key) is a \(o[key]!.typeName))")
            }
            guard values.count <= Self.maxMatrix / max(1, scopes.count) else {
                throw m.pos.error("target \(b.labels[0]): the matrix makes more than \(Self.maxMatrix) targets")
            }
            scopes = values.flatMap { value in scopes.map { s in var s = s; s[key] = value; return s } }
        }
        return scopes
    }

    // MARK: attribute decoding

    private static let known: Set<String> = [
        "name", "matrix", "description", "inherits", "context", "dockerfile", "dockerfile-inline", "target", "network",
        "args", "labels", "contexts", "tags", "platforms", "cache-from", "cache-to", "secret", "ssh", "output",
        "no-cache-filter", "attest", "annotations", "entitlements", "no-cache", "pull",
    ]
    /// buildx attributes rbuild reads but does not model (yet): accepted and ignored.
    private static let ignored: Set<String> = ["shm-size", "ulimits", "call", "extra-hosts", "resources", "policy"]

    private func decodeTarget(_ body: Body, name: String, scope: Scope, _ ev: Evaluator) throws -> TargetSpec {
        var t = TargetSpec(name: name)
        for a in body.attributes {
            guard Self.known.contains(a.name) || Self.ignored.contains(a.name) else {
                throw a.pos.error("target \(name): unknown attribute \"\(a.name)\"")
            }
            switch a.name {
            case "description": t.description = try string(a, scope, ev)
            case "inherits": t.inherits = try stringList(a, scope, ev) ?? []
            case "context": t.context = try string(a, scope, ev)
            case "dockerfile": t.dockerfile = try string(a, scope, ev)
            case "dockerfile-inline": t.dockerfileInline = try string(a, scope, ev)
            case "target": t.target = try string(a, scope, ev)
            case "network": t.network = try string(a, scope, ev)
            case "args": t.args = try stringMap(a, scope, ev)
            case "labels": t.labels = try stringMap(a, scope, ev)
            case "contexts": t.contexts = try stringMap(a, scope, ev)?.mapValues { $0 ?? "" }
            case "tags": t.tags = try stringList(a, scope, ev)
            case "platforms": t.platforms = try stringList(a, scope, ev)
            case "cache-from": t.cacheFrom = try stringList(a, scope, ev)
            case "cache-to": t.cacheTo = try stringList(a, scope, ev)
            case "secret": t.secrets = try stringList(a, scope, ev)
            case "ssh": t.ssh = try stringList(a, scope, ev)
            case "output": t.outputs = try stringList(a, scope, ev)
            case "no-cache-filter": t.noCacheFilter = try stringList(a, scope, ev)
            case "attest": t.attest = try stringList(a, scope, ev)
            case "annotations": t.annotations = try stringList(a, scope, ev)
            case "entitlements": t.entitlements = try stringList(a, scope, ev)
            case "no-cache": t.noCache = try bool(a, scope, ev)
            case "pull": t.pull = try bool(a, scope, ev)
            default: break
            }
        }
        return t
    }

    private func string(_ a: Attribute, _ scope: Scope, _ ev: Evaluator) throws -> String? {
        let v = try ev.eval(a.expr, scope)
        if v.isNull { return nil }
        guard let s = v.asString else { throw a.pos.error("attribute \"\(a.name)\" must be a string, not a \(v.typeName)") }
        return s
    }

    private func bool(_ a: Attribute, _ scope: Scope, _ ev: Evaluator) throws -> Bool? {
        let v = try ev.eval(a.expr, scope)
        if v.isNull { return nil }
        guard let b = v.asBool else { throw a.pos.error("attribute \"\(a.name)\" must be a bool, not a \(v.typeName)") }
        return b
    }

    /// A list of strings; an object element (`{type = "registry", ref = "…"}`, buildx's typed
    /// form of cache, output, secret and attest entries) becomes its `k=v,…` text.
    private func stringList(_ a: Attribute, _ scope: Scope, _ ev: Evaluator) throws -> [String]? {
        let v = try ev.eval(a.expr, scope)
        if v.isNull { return nil }
        guard case .list(let l) = v else {
            throw a.pos.error("attribute \"\(a.name)\" must be a list of strings, not a \(v.typeName) (write [\(v.jsonText)])")
        }
        return try l.compactMap { e -> String? in
            if e.isNull { return nil }
            if let s = e.asString { return s }
            if case .object(let o) = e {
                let keys = o.keys.sorted { $0 == "type" ? true : $1 == "type" ? false : $0 < $1 }
                return try keys.map { k in
                    guard let s = o[k]!.asString else { throw a.pos.error("attribute \"\(a.name)\": \(k) must be a string") }
                    return "\(k)=\(s)"
                }.joined(separator: ",")
            }
            throw a.pos.error("attribute \"\(a.name)\" must be a list of strings; it holds a \(e.typeName)")
        }
    }

    private func stringMap(_ a: Attribute, _ scope: Scope, _ ev: Evaluator) throws -> [String: String?]? {
        let v = try ev.eval(a.expr, scope)
        if v.isNull { return nil }
        guard case .object(let o) = v else {
            throw a.pos.error("attribute \"\(a.name)\" must be a map of strings ({ KEY = \"value\" }), not a \(v.typeName)")
        }
        var m: [String: String?] = [:]
        for (k, e) in o {
            if e.isNull { m[k] = .some(nil); continue }
            guard let s = e.asString else { throw a.pos.error("attribute \"\(a.name)\": \(k) must be a string, not a \(e.typeName)") }
            m[k] = s
        }
        return m
    }

    // MARK: inherits and --set

    func definition(overrides: [String]) throws -> BakeDefinition {
        let parsed = try Overrides.parse(overrides, targetNames: order)
        var d = BakeDefinition()
        d.groups = groups
        d.groupDescriptions = groupDescriptions
        d.variables = variables
        d.targetOrder = order
        var done: [String: TargetSpec] = [:]
        func resolve(_ name: String, _ path: [String]) throws -> TargetSpec {
            if let t = done[name] { return t }
            guard let own = specs[name] else {
                throw BakeError(file: "", "target \(path.last ?? name) inherits from \"\(name)\", which is no target")
            }
            if path.contains(name) {
                throw BakeError(file: "", "inherits cycle: \((path.drop { $0 != name } + [name]).joined(separator: " → "))")
            }
            var merged = TargetSpec(name: name)
            for parent in own.inherits { merged.merge(try resolve(parent, path + [name])) }
            merged.merge(own)
            merged.name = name
            merged.inherits = []
            try Overrides.apply(parsed[name] ?? [], to: &merged)
            done[name] = merged
            return merged
        }
        for n in order { d.targets[n] = try resolve(n, []).resolved() }
        return d
    }
}
