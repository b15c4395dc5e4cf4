import Foundation
import RBuildSystem

/// Reading bake files (`docker buildx bake`): HCL, JSON and compose files into a `BakeDefinition`.
public enum Bake {
    /// The files buildx looks for in a directory when none is named, in its order: compose-go's
    /// `DefaultFileNames`, then buildx's own (bake/bake.go `defaultFilenames`, buildx 0.2x).
    /// Every one that exists is read, later ones merged over earlier ones.
    public static let defaultFileNames = [
        "compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml",
        "docker-bake.json", "docker-bake.hcl", "docker-bake.override.json", "docker-bake.override.hcl",
    ]

    /// The default files that exist in `dir`, as paths.
    public static func defaultFiles(in dir: String) -> [String] {
        defaultFileNames.map { dir.hasSuffix("/") ? dir + $0 : dir + "/" + $0 }
            .filter { FileManager.default.fileExists(atPath: $0) }
    }

    /// Reads `files` in order (later files add to and override earlier ones' targets, groups and
    /// variables), with variables overridden from `environment` and `--set` `overrides` applied.
    public static func load(_ files: [BakeFile], environment: [String: String], overrides: [String] = []) throws -> BakeDefinition {
        try load(files, environment: environment, overrides: overrides, now: Date.init)
    }

    static func load(_ files: [BakeFile], environment: [String: String], overrides: [String], now: @escaping () -> Date) throws -> BakeDefinition {
        var reader = BakeReader(environment: environment, now: now)
        var composed: [[TargetSpec]] = []   // each compose file's services, read once
        var bodies: [Body] = []
        for f in files {
            switch kind(of: f) {
            case .compose: composed.append(try Compose.read(f, environment: environment))
            case .hcl: bodies.append(try HCLParser.parse(file: f.name, bytes: f.contents))
            case .json: bodies.append(try BakeJSON.parse(file: f.name, bytes: f.contents))
            case .unknown:
                // As buildx: a compose file if it reads as one, else HCL, else JSON.
                if let c = try? Compose.read(f, environment: environment), !c.isEmpty {
                    composed.append(c)
                } else {
                    do { bodies.append(try HCLParser.parse(file: f.name, bytes: f.contents)) } catch let hclError {
                        guard let b = try? BakeJSON.parse(file: f.name, bytes: f.contents) else { throw hclError }
                        bodies.append(b)
                    }
                }
            }
        }
        // buildx reads compose files first, then all HCL/JSON files merged as one body.
        for specs in composed {
            for spec in specs { reader.add(spec) }
            reader.addGroup("default", specs.map(\.name), description: nil)
        }
        if !bodies.isEmpty { try reader.read(bodies) }
        return try reader.definition(overrides: overrides)
    }

    enum Kind { case hcl, json, compose, unknown }

    static func kind(of f: BakeFile) -> Kind {
        let n = f.name.lowercased()
        if n.hasSuffix(".yml") || n.hasSuffix(".yaml") { return .compose }
        if n.hasSuffix(".json") { return .json }
        if n.hasSuffix(".hcl") { return .hcl }
        return .unknown
    }
}

extension BakeDefinition {
    /// The targets that `names` (targets, groups or globs) stand for, groups expanded in order,
    /// each once; no names means the `default` group or target. A target used as another's
    /// `target:NAME` context and not asked for comes last, with output `type=cacheonly` (buildx).
    public func resolve(_ names: [String]) throws -> [BakeTarget] {
        try expand(names).targets
    }

    struct Expansion {
        var requested: [String]
        var targets: [BakeTarget]
        var groups: [String]
    }

    func expand(_ names: [String]) throws -> Expansion {
        let wanted = names.isEmpty ? ["default"] : names.map { $0.replacingOccurrences(of: ".", with: "_") }
        var requested: [String] = []
        for n in wanted {
            if n.contains(where: { "*?[]".contains($0) }) {
                let all = (groups.keys.sorted() + (targetOrder.isEmpty ? targets.keys.sorted() : targetOrder))
                let m = all.filter { globMatch(Array(n), Array($0)[...]) }
                guard !m.isEmpty else { throw BakeError(file: "", "could not find any target matching \"\(n)\"") }
                requested += m
            } else {
                requested.append(n)
            }
        }
        requested = TargetSpec.dedupe(requested)
        var order: [String] = []
        var groupsSeen: [String] = []
        func visit(_ n: String, _ path: [String]) throws {
            if let members = groups[n] {
                if path.contains(n) {
                    throw BakeError(file: "", "group cycle: \((path.drop { $0 != n } + [n]).joined(separator: " → ")): a group cannot contain itself")
                }
                if !groupsSeen.contains(n) { groupsSeen.append(n) }
                for m in members { try visit(m, path + [n]) }
            } else if targets[n] != nil {
                if !order.contains(n) { order.append(n) }
            } else {
                let known = (groups.keys.map { "\($0) (group)" } + targets.keys.sorted()).sorted()
                throw BakeError(file: "", path.isEmpty
                    ? "no target or group named \"\(n)\"" + (known.isEmpty ? "; the files define none" : "; defined: \(known.joined(separator: ", "))")
                    : "group \"\(path.last!)\" lists \"\(n)\", which is no target or group")
            }
        }
        for n in requested { try visit(n, []) }
        var result = order.map { targets[$0]! }
        // Targets named by `target:` contexts are built too (buildx's loadLinks).
        var i = 0
        while i < result.count {
            for (_, v) in result[i].contexts.sorted(by: { $0.key < $1.key }) where v.hasPrefix("target:") {
                let other = String(v.dropFirst(7))
                guard other != result[i].name else {
                    throw BakeError(file: "", "target \(other) cannot use itself as a context")
                }
                guard var t = targets[other] else {
                    throw BakeError(file: "", "target \(result[i].name) uses target:\(other) as a context, but no target \(other) exists")
                }
                if !result.contains(where: { $0.name == other }) {
                    t.outputs = ["type=cacheonly"]
                    result.append(t)
                }
            }
            i += 1
        }
        try checkLinkCycles(result)
        return Expansion(requested: requested, targets: result, groups: groupsSeen)
    }

    private func checkLinkCycles(_ list: [BakeTarget]) throws {
        func walk(_ name: String, _ path: [String]) throws {
            guard let t = targets[name] else { return }
            for (_, v) in t.contexts where v.hasPrefix("target:") {
                let o = String(v.dropFirst(7))
                if path.contains(o) { throw BakeError(file: "", "infinite loop from \(name) to \(o) through target: contexts") }
                try walk(o, path + [o])
            }
        }
        for t in list { try walk(t.name, [t.name]) }
    }

    /// What `docker buildx bake --print NAMES` prints (with its trailing newline).
    public func printJSON(_ names: [String]) throws -> [UInt8] {
        let e = try expand(names)
        var groupJSON: [String: GoValue] = [:]
        for g in e.groups {
            var fields: [GoField] = []
            if let d = groupDescriptions[g], !d.isEmpty { fields.append(GoField(key: "description", value: .string(d))) }
            fields.append(GoField(key: "targets", value: .array(groups[g]!.map { .string($0) })))
            groupJSON[g] = .object(fields)
        }
        // buildx adds the names asked for as the group "default", sorted, unless that group was asked for.
        let asked = e.requested.filter { !($0 == "default" && groups["default"] != nil) }
        if !asked.isEmpty {
            var members: [String] = []
            if case .object(let f)? = groupJSON["default"], case .array(let l)? = f.last?.value {
                members = l.compactMap { if case .string(let s) = $0 { s } else { nil } }
            }
            members = TargetSpec.dedupe(members + asked).sorted()
            groupJSON["default"] = .object([GoField(key: "targets", value: .array(members.map { .string($0) }))])
        }
        var targetJSON: [String: GoValue] = [:]
        for t in e.targets { targetJSON[t.name] = Self.json(t) }
        var out = ""
        var top: [GoField] = []
        if !groupJSON.isEmpty { top.append(GoField(key: "group", value: GoJSON.sortedObject(groupJSON))) }
        top.append(GoField(key: "target", value: GoJSON.sortedObject(targetJSON)))
        GoJSON.write(.object(top), into: &out)
        return Array((out + "\n").utf8)
    }

    /// A target as buildx marshals it: fields in its Target struct's order, empty ones left out,
    /// `${` in args, labels, annotations and dockerfile-inline written `$${` (so the printed file
    /// reads back the same), and cache/output/secret/ssh/attest entries as objects.
    static func json(_ t: BakeTarget) -> GoValue {
        var f: [GoField] = []
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "${", with: "$${").replacingOccurrences(of: "%{", with: "%%{")
        }
        func strings(_ k: String, _ l: [String], _ map: (String) -> String = { $0 }) {
            if !l.isEmpty { f.append(GoField(key: k, value: .array(l.map { .string(map($0)) }))) }
        }
        func entries(_ k: String, _ l: [String], _ conv: (String) -> GoValue) {
            if !l.isEmpty { f.append(GoField(key: k, value: .array(l.map(conv)))) }
        }
        func str(_ k: String, _ v: String?) { if let v { f.append(GoField(key: k, value: .string(v))) } }
        func dict(_ k: String, _ m: [String: String]) {
            if !m.isEmpty { f.append(GoField(key: k, value: GoJSON.sortedObject(m.mapValues { .string($0) }))) }
        }
        if let d = t.description, !d.isEmpty { str("description", d) }
        strings("annotations", t.annotations, esc)
        entries("attest", t.attest, attestJSON)
        str("context", t.context)
        dict("contexts", t.contexts)
        str("dockerfile", t.dockerfile)
        str("dockerfile-inline", t.dockerfileInline.map(esc))
        dict("args", t.args.compactMapValues { $0 }.mapValues(esc))
        dict("labels", t.labels.compactMapValues { $0 }.mapValues(esc))
        strings("tags", t.tags)
        entries("cache-from", t.cacheFrom, cacheJSON)
        entries("cache-to", t.cacheTo, cacheJSON)
        str("target", t.target)
        entries("secret", t.secrets, secretJSON)
        entries("ssh", t.ssh, sshJSON)
        strings("platforms", t.platforms)
        entries("output", t.outputs, outputJSON)
        if let p = t.pull { f.append(GoField(key: "pull", value: .bool(p))) }
        if let n = t.noCache { f.append(GoField(key: "no-cache", value: .bool(n))) }
        str("network", t.network)
        strings("no-cache-filter", t.noCacheFilter)
        strings("entitlements", t.entitlements)
        return .object(f)
    }

    static func cacheJSON(_ s: String) -> GoValue {
        let e = CSVEntry(s)
        if e.fields.count == 1 && !s.contains("=") {
            return GoJSON.sortedObject(["type": .string("registry"), "ref": .string(s)])
        }
        return GoJSON.sortedObject(Dictionary(e.fields.map { ($0.0, GoValue.string($0.1)) }) { _, b in b })
    }

    static func outputJSON(_ s: String) -> GoValue {
        if !s.contains("=") && !s.contains(",") {
            return GoJSON.sortedObject(["type": .string(s == "-" ? "tar" : "local"), "dest": .string(s)])
        }
        return cacheJSON(s)
    }

    static func attestJSON(_ s: String) -> GoValue {
        var m: [String: GoValue] = [:]
        for (k, v) in CSVEntry(s).fields {
            if k == "disabled" { if v == "true" { m[k] = .bool(true) } } else { m[k] = .string(v) }
        }
        return GoJSON.sortedObject(m)
    }

    static func secretJSON(_ s: String) -> GoValue {
        let e = CSVEntry(s)
        var id = e.value("id"), src = e.value("src") ?? e.value("source"), env = e.value("env")
        if e.value("type") == "env" && env == nil { env = src; src = nil }
        if id == nil && src == nil && env == nil { id = s }
        return .object([("id", id), ("src", src), ("env", env)].compactMap { k, v in v.map { GoField(key: k, value: .string($0)) } })
    }

    static func sshJSON(_ s: String) -> GoValue {
        let parts = s.split(separator: "=", maxSplits: 1).map(String.init)
        var f: [GoField] = [GoField(key: "id", value: .string(parts.first ?? ""))]
        if parts.count > 1 { f.append(GoField(key: "paths", value:  .array(parts[1].split(separator: ",").map { .string(String($0)) }))) }
        return .object(f)
    }

    /// `--list=targets`: targets and groups by name, without those starting with `_` (buildx's
    /// private convention); a group's description lists its members, sorted.
    public func listTargets() -> [(name: String, description: String)] {
        var rows: [(name: String, description: String)] = []
        for (n, t) in targets { rows.append((n, t.description ?? "")) }
        for (n, members) in groups {
            var d = groupDescriptions[n] ?? ""
            if !members.isEmpty {
                let names = members.sorted().joined(separator: ", ")
                d = d.isEmpty ? names : "\(d) (\(names))"
            }
            rows.append((n, d))
        }
        return rows.filter { !$0.name.hasPrefix("_") }.sorted { $0.name < $1.name }
    }

    /// `--list=variables`: name and description, by name (the value is in `variables`).
    public func listVariables() -> [(name: String, description: String)] {
        variables.sorted { $0.name < $1.name }.map { ($0.name, $0.description ?? "") }
    }
}
