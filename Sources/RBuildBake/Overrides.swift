import RBuildSystem

// `--set PATTERN.KEY=VALUE` (buildx's newOverrides and AddOverrides in bake/bake.go): PATTERN is a
// target name or a glob over target names; list keys collect every --set given for them (and
// `KEY+=VALUE` appends to the file's list instead of replacing it); map keys take a name
// (`args.NAME`); other keys replace the value.

enum Overrides {
    struct Entry {
        var key: String
        var subkey: String?
        var values: [String]
        var append: Bool
        var text: String
    }

    static let listKeys: Set<String> = ["output", "cache-to", "cache-from", "tags", "platform", "secrets", "ssh",
                                        "attest", "entitlements", "network", "annotations", "no-cache-filter"]
    static let mapKeys: Set<String> = ["args", "labels", "contexts"]
    static let valueKeys: Set<String> = ["context", "dockerfile", "target", "no-cache", "pull", "description"]

    static func parse(_ list: [String], targetNames: [String]) throws -> [String: [Entry]] {
        var out: [String: [Entry]] = [:]
        for text in list {
            let fail = { (m: String) in BakeError(file: "", "--set \(text): \(m)") }
            guard let eq = text.firstIndex(of: "=") else {
                throw fail("expected PATTERN.KEY=VALUE")
            }
            var lhs = String(text[..<eq])
            let value = String(text[text.index(after: eq)...])
            let append = lhs.hasSuffix("+")
            if append { lhs.removeLast() }
            let keys = lhs.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard keys.count >= 2, !keys[0].isEmpty else { throw fail("expected PATTERN.KEY=VALUE (as app.tags=app:1)") }
            let key = keys[1]
            guard listKeys.contains(key) || mapKeys.contains(key) || valueKeys.contains(key) else {
                throw fail("unknown key \"\(key)\" (known: \((listKeys.union(mapKeys).union(valueKeys)).sorted().joined(separator: ", ")))")
            }
            if mapKeys.contains(key) && keys.count != 3 { throw fail("\(key) needs a name, as \(keys[0]).\(key).NAME=VALUE") }
            if !mapKeys.contains(key) && keys.count == 3 { throw fail("\(key) takes no name after it") }
            let names: [String]
            if targetNames.contains(keys[0]) {
                names = [keys[0]]
            } else {
                names = targetNames.filter { globMatch(Array(keys[0]), Array($0)[...]) }
                guard !names.isEmpty else { throw fail("no target matches \"\(keys[0])\"") }
            }
            for n in names {
                var entries = out[n] ?? []
                // Repeated list keys accumulate into one entry, as buildx's ArrValue does.
                if listKeys.contains(key), let i = entries.firstIndex(where: { $0.key == key }) {
                    entries[i].values.append(value)
                    entries[i].append = append
                } else {
                    entries.removeAll { $0.key == key && $0.subkey == (keys.count == 3 ? keys[2] : nil) }
                    entries.append(Entry(key: key, subkey: keys.count == 3 ? keys[2] : nil, values: [value], append: append, text: text))
                }
                out[n] = entries
            }
        }
        return out
    }

    static func apply(_ entries: [Entry], to t: inout TargetSpec) throws {
        for e in entries {
            let v = e.values.last ?? ""
            func list(_ current: [String]?) -> [String] { e.append ? (current ?? []) + e.values : e.values }
            func boolValue() throws -> Bool {
                switch v {
                case "1", "t", "T", "TRUE", "true", "True": return true
                case "0", "f", "F", "FALSE", "false", "False": return false
                default: throw BakeError(file: "", "--set \(e.text): \(e.key) takes true or false, not \"\(v)\"")
                }
            }
            switch e.key {
            case "context": t.context = v
            case "dockerfile": t.dockerfile = v
            case "target": t.target = v
            case "description": t.description = v
            case "network": t.network = v
            case "no-cache": t.noCache = try boolValue()
            case "pull": t.pull = try boolValue()
            case "args": t.args = (t.args ?? [:]).merging([e.subkey!: v]) { _, b in b }
            case "labels": t.labels = (t.labels ?? [:]).merging([e.subkey!: v]) { _, b in b }
            case "contexts": t.contexts = (t.contexts ?? [:]).merging([e.subkey!: v]) { _, b in b }
            case "tags": t.tags = list(t.tags)
            case "platform": t.platforms = list(t.platforms)
            case "output": t.outputs = list(t.outputs)
            case "cache-from": t.cacheFrom = list(t.cacheFrom)
            case "cache-to": t.cacheTo = list(t.cacheTo)
            case "secrets": t.secrets = list(t.secrets)
            case "ssh": t.ssh = list(t.ssh)
            case "no-cache-filter": t.noCacheFilter = list(t.noCacheFilter)
            // buildx always appends these three.
            case "attest": t.attest = (t.attest ?? []) + e.values
            case "annotations": t.annotations = (t.annotations ?? []) + e.values
            case "entitlements": t.entitlements = (t.entitlements ?? []) + e.values
            default: break
            }
        }
    }
}
