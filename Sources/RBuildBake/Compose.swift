import Foundation
import Yams

// Compose files as buildx reads them (bake/compose.go): each service with a `build` becomes a
// target named after it (dots become underscores); `image` is its tag when `build.tags` gives
// none; `x-bake` inside `build` adds bake attributes compose has no field for; all buildable
// services form the group "default". Values are interpolated from the environment first
// (compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR:+alt}, $$).

enum Compose {
    static func root(_ f: BakeFile, environment: [String: String]) throws -> [String: Any] {
        try checkNesting(f.contents, file: f.name)
        let text = String(decoding: f.contents, as: UTF8.self)
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch let e as YamlError {
            switch e {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _):
                throw BakeError(file: f.name, line: mark.line, column: mark.column, "invalid YAML: \(problem)")
            default:
                throw BakeError(file: f.name, "invalid YAML: \(e)")
            }
        }
        guard let node, case .mapping = node else { throw BakeError(file: f.name, "a compose file is a mapping with services:") }
        var budget = maxNodes
        return try plain(node, f.name, environment, &budget) as? [String: Any] ?? [:]
    }

    /// Nodes the tree may expand to: an alias is its anchor's whole tree again, so aliases of
    /// aliases grow exponentially ("billion laughs") from a few lines.
    static let maxNodes = 100_000

    /// The YAML tree as dictionaries, lists and strings, every scalar interpolated.
    private static func plain(_ n: Node, _ file: String, _ env: [String: String], _ budget: inout Int) throws -> Any {
        budget -= 1
        guard budget >= 0 else {
            throw BakeError(file: file, "the YAML expands to more than \(maxNodes) values (aliases of aliases?)")
        }
        switch n {
        case .scalar(let s):
            let m = n.mark
            return try interpolate(s.string, env) { BakeError(file: file, line: m?.line ?? 0, column: m?.column ?? 0, $0) }
        case .sequence(let seq):
            return try seq.map { try plain($0, file, env, &budget) }
        case .mapping(let map):
            var d: [String: Any] = [:]
            for (k, v) in map { d[k.string ?? ""] = try plain(v, file, env, &budget) }
            return d
        }
    }

    /// How deep a YAML document may nest. Yams builds its tree recursively (Parser.loadNode), so
    /// thousands of `[` overflow the stack: `checkNesting` refuses such a file before Yams reads it.
    static let maxDepth = 100

    /// Refuses YAML that may nest past `maxDepth`, by a bound that never undercounts: the open
    /// flow brackets (`[`, `{`) plus, for block structure, two levels (a mapping and a sequence
    /// can share a column) per open indentation and one per `- ` or `? ` starting the line. Quoted
    /// scalars, comments and block scalars' (`|`, `>`) lines are not structure and are skipped.
    static func checkNesting(_ b: [UInt8], file: String) throws {
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t"), cr = UInt8(ascii: "\r")
        var flow = 0
        var indents: [Int] = []
        var blockDepth = 0
        var quote: UInt8?
        var scalarHeader: Int?, scalarIndent: Int?
        var line = 0
        var start = 0
        while start <= b.count {
            line += 1
            var end = start
            while end < b.count, b[end] != UInt8(ascii: "\n") { end += 1 }
            defer { start = end + 1 }
            var k = start
            while k < end, b[k] == space { k += 1 }
            let indent = k - start
            let blank = !b[k..<end].contains { $0 != space && $0 != tab && $0 != cr }
            if let h = scalarHeader {
                if blank { continue }
                if scalarIndent == nil, indent > h { scalarIndent = indent }
                if let si = scalarIndent, indent >= si { continue }
                scalarHeader = nil
                scalarIndent = nil
            }
            if quote == nil, flow == 0, !blank, b[k] != UInt8(ascii: "#") {
                while let t = indents.last, t > indent { indents.removeLast() }
                if indents.last != indent { indents.append(indent) }
                var n = 0
                var j = k
                while j < end, b[j] == UInt8(ascii: "-") || b[j] == UInt8(ascii: "?"), j + 1 == end || b[j + 1] == space {
                    n += 1
                    j += 1
                    while j < end, b[j] == space { j += 1 }
                }
                blockDepth = 2 * indents.count + n
            }
            /// Whether `j` starts a node: the line's first text, or after `[ { ,`, or after an
            /// indicator `: - ?` and a blank.
            func startsNode(_ j: Int) -> Bool {
                var p = j - 1
                while p >= start, b[p] == space || b[p] == tab { p -= 1 }
                guard p >= start else { return true }
                if "[{,".utf8.contains(b[p]) { return true }
                return ":-?".utf8.contains(b[p]) && p + 1 < j && (b[p + 1] == space || b[p + 1] == tab)
            }
            var contentEnd = end
            var j = k
            while j < end {
                let c = b[j]
                if let q = quote {
                    if q == UInt8(ascii: "\"") && c == UInt8(ascii: "\\") { j += 2; continue }
                    if c == q {
                        if q == UInt8(ascii: "'"), j + 1 < end, b[j + 1] == q { j += 2; continue }
                        quote = nil
                    }
                    j += 1
                    continue
                }
                switch c {
                case UInt8(ascii: "\""), UInt8(ascii: "'"):
                    // Only where a scalar starts: a quote inside a plain scalar (it's) is text.
                    if startsNode(j) { quote = c }
                case UInt8(ascii: "#") where j == k || b[j - 1] == space || b[j - 1] == tab:
                    contentEnd = j
                    j = end
                    continue
                case UInt8(ascii: "["), UInt8(ascii: "{"):
                    flow += 1
                    if blockDepth + flow > maxDepth {
                        throw BakeError(file: file, line: line, column: j - start + 1,
                                        "YAML nested more than \(maxDepth) levels deep: compose files here nest at most \(maxDepth)")
                    }
                case UInt8(ascii: "]"), UInt8(ascii: "}"):
                    flow = max(0, flow - 1)
                default:
                    break
                }
                j += 1
            }
            if blockDepth > maxDepth {
                throw BakeError(file: file, line: line, column: indent + 1,
                                "YAML nested more than \(maxDepth) levels deep: compose files here nest at most \(maxDepth)")
            }
            // A block scalar's header: `|` or `>`, then chomping and indentation indicators, ends the line.
            if quote == nil, flow == 0 {
                var e = contentEnd
                while e > k, b[e - 1] == space || b[e - 1] == tab || b[e - 1] == cr { e -= 1 }
                while e > k, "+-0123456789".utf8.contains(b[e - 1]) { e -= 1 }
                if e > k, b[e - 1] == UInt8(ascii: "|") || b[e - 1] == UInt8(ascii: ">") {
                    if startsNode(e - 1) {
                        scalarHeader = indent
                        scalarIndent = nil
                    }
                }
            }
        }
    }

    static func interpolate(_ s: String, _ env: [String: String], _ fail: (String) -> BakeError) throws -> String {
        guard s.contains("$") else { return s }
        var out = ""
        var chars = Array(s)[...]
        while let c = chars.popFirst() {
            guard c == "$" else { out.append(c); continue }
            if chars.first == "$" { out.append("$"); chars = chars.dropFirst(); continue }
            if chars.first == "{" {
                chars = chars.dropFirst()
                guard let close = chars.firstIndex(of: "}") else { throw fail("unclosed ${ in \"\(s)\"") }
                let inner = String(chars[..<close])
                chars = chars[chars.index(after: close)...]
                let name = String(inner.prefix { $0.isLetter || $0.isNumber || $0 == "_" })
                let rest = inner.dropFirst(name.count)
                let value = env[name]
                func arg(_ n: Int) -> String { String(rest.dropFirst(n)) }
                switch true {
                case rest.isEmpty: out += value ?? ""
                case rest.hasPrefix(":-"): out += (value ?? "").isEmpty ? arg(2) : value!
                case rest.hasPrefix("-"): out += value ?? arg(1)
                case rest.hasPrefix(":?"): guard let v = value, !v.isEmpty else { throw fail("\(name): \(arg(2))") }; out += v
                case rest.hasPrefix("?"): guard let v = value else { throw fail("\(name): \(arg(1))") }; out += v
                case rest.hasPrefix(":+"): out += (value ?? "").isEmpty ? "" : arg(2)
                case rest.hasPrefix("+"): out += value == nil ? "" : arg(1)
                default: throw fail("invalid interpolation ${\(inner)}")
                }
                continue
            }
            let name = String(chars.prefix { $0.isLetter || $0.isNumber || $0 == "_" })
            if name.isEmpty { out.append("$"); continue }
            chars = chars.dropFirst(name.count)
            out += env[name] ?? ""
        }
        return out
    }

    static func read(_ f: BakeFile, environment: [String: String]) throws -> [TargetSpec] {
        let r = try root(f, environment: environment)
        guard let services = r["services"] as? [String: Any] else {
            throw BakeError(file: f.name, "a compose file needs services:")
        }
        let secrets = r["secrets"] as? [String: Any] ?? [:]
        var out: [TargetSpec] = []
        for name in services.keys.sorted() {
            let svc = services[name] as? [String: Any] ?? [:]
            guard let build = svc["build"] else { continue }
            let tname = name.replacingOccurrences(of: ".", with: "_")
            guard BakeReader.validName(tname) else { throw BakeError(file: f.name, "invalid service name \"\(name)\" for a bake target") }
            var t = TargetSpec(name: tname)
            let fail = { (m: String) in BakeError(file: f.name, "service \(name): \(m)") }
            if let ctx = build as? String {
                t.context = cleanPath(ctx)
            } else if let b = build as? [String: Any] {
                if let c = b["context"] as? String, !c.isEmpty { t.context = cleanPath(c) }
                t.dockerfile = (b["dockerfile"] as? String).flatMap { $0.isEmpty ? nil : $0 }
                t.dockerfileInline = (b["dockerfile_inline"] as? String).flatMap { $0.isEmpty ? nil : $0 }
                t.target = (b["target"] as? String).flatMap { $0.isEmpty ? nil : $0 }
                t.network = (b["network"] as? String).flatMap { $0.isEmpty ? nil : $0 }
                if let a = b["args"] { t.args = try mapping(a, environment, fail, "args") }
                if let l = b["labels"] { t.labels = try mapping(l, [:], fail, "labels") }
                if let c = b["additional_contexts"] {
                    t.contexts = try mapping(c, [:], fail, "additional_contexts").mapValues { namedContext($0 ?? "") }
                }
                t.cacheFrom = b["cache_from"] as? [String]
                t.cacheTo = b["cache_to"] as? [String]
                t.platforms = b["platforms"] as? [String]
                t.tags = b["tags"] as? [String]
                if let s = b["ssh"] {
                    let entries = try s as? [String] ?? mapping(s, [:], fail, "ssh").map { "\($0.key)=\($0.value ?? "")" }
                    t.ssh = entries.sorted()
                }
                if let ss = b["secrets"] as? [Any] {
                    t.secrets = try ss.map { item in
                        let src = (item as? String) ?? ((item as? [String: Any])?["source"] as? String) ?? ""
                        guard let def = secrets[src] as? [String: Any] else {
                            throw fail("secret \"\(src)\" is not defined under the top-level secrets:")
                        }
                        if (def["external"] as? String) == "true" { throw fail("unsupported external secret \(src)") }
                        var s = "id=\(src)"
                        if let file = def["file"] as? String { s += ",src=\(file)" }
                        if let env = def["environment"] as? String { s += ",env=\(env)" }
                        return s
                    }
                }
                if let v = b["no_cache"] as? String, v == "true" { t.noCache = true }
                if let v = b["pull"] as? String, v == "true" { t.pull = true }
                if let x = b["x-bake"] as? [String: Any] { try extensions(x, &t, fail) }
            } else {
                throw fail("build must be a path or a mapping")
            }
            if (t.tags ?? []).isEmpty, let image = svc["image"] as? String, !image.isEmpty { t.tags = [image] }
            out.append(t)
        }
        return out
    }

    /// `x-bake`: bake attribute names, a list or one space-separated string each (compose.go's xbake).
    private static func extensions(_ x: [String: Any], _ t: inout TargetSpec, _ fail: (String) -> BakeError) throws {
        func list(_ k: String) -> [String]? {
            if let l = x[k] as? [String] { return l }
            if let s = x[k] as? String { return s.split(separator: " ").map(String.init) }
            return nil
        }
        for k in x.keys where !["tags", "cache-from", "cache-to", "secret", "ssh", "platforms", "output", "pull", "no-cache", "no-cache-filter", "contexts"].contains(k) {
            throw fail("x-bake: unknown key \"\(k)\"")
        }
        if let l = list("tags") { t.tags = TargetSpec.dedupe((t.tags ?? []) + l) }
        if let l = list("cache-from") { t.cacheFrom = (t.cacheFrom ?? []) + l }
        if let l = list("cache-to") { t.cacheTo = (t.cacheTo ?? []) + l }
        if let l = list("secret") { t.secrets = (t.secrets ?? []) + l }
        if let l = list("ssh") { t.ssh = ((t.ssh ?? []) + l).sorted() }
        if let l = list("platforms") { t.platforms = TargetSpec.dedupe((t.platforms ?? []) + l) }
        if let l = list("output") { t.outputs = (t.outputs ?? []) + l }
        if let l = list("no-cache-filter") { t.noCacheFilter = TargetSpec.dedupe((t.noCacheFilter ?? []) + l) }
        if let p = x["pull"] as? String { t.pull = p == "true" }
        if let n = x["no-cache"] as? String { t.noCache = n == "true" }
        if let c = x["contexts"] as? [String: Any] {
            var m = t.contexts ?? [:]
            for (k, v) in c where m[k] == nil { m[k] = namedContext(v as? String ?? "") }
            t.contexts = m
        }
    }

    /// A map, or a list of `K=V` (a bare `K` takes its value from the environment, else is dropped).
    private static func mapping(_ v: Any, _ env: [String: String], _ fail: (String) -> BakeError, _ what: String) throws -> [String: String?] {
        if let d = v as? [String: Any] {
            return d.mapValues { $0 as? String }
        }
        if let l = v as? [String] {
            var m: [String: String?] = [:]
            for item in l {
                if let eq = item.firstIndex(of: "=") {
                    m[String(item[..<eq])] = String(item[item.index(after: eq)...])
                } else if let e = env[item] {
                    m[item] = e
                }
            }
            return m
        }
        throw fail("\(what) must be a mapping or a list of KEY=VALUE")
    }

    private static func namedContext(_ v: String) -> String {
        for p in ["service:", "target:"] where v.hasPrefix(p) {
            return "target:" + v.dropFirst(p.count).replacingOccurrences(of: ".", with: "_")
        }
        return v.contains("://") || v.contains(":") ? v : cleanPath(v)
    }

    /// Go's filepath.Clean for relative paths, which compose-go applies (./dir → dir).
    static func cleanPath(_ p: String) -> String {
        if p.contains("://") || p.hasPrefix("git@") { return p }
        let abs = p.hasPrefix("/")
        var parts: [Substring] = []
        for c in p.split(separator: "/") {
            if c == "." { continue }
            if c == "..", let last = parts.last, last != ".." { parts.removeLast(); continue }
            parts.append(c)
        }
        let s = parts.joined(separator: "/")
        return abs ? "/" + s : (s.isEmpty ? "." : s)
    }
}
