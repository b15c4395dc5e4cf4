// A target as one block (or compose service) states it, before inherits and defaults: nil means
// "not set here", which decides what an inheriting target or a later file takes. The merge rules
// are buildx's Target.Merge (bake/bake.go): maps merge key by key, tags/platforms/cache-to/output
// are replaced, cache-from/secret/ssh/attest/annotations/entitlements/no-cache-filter appended.

struct TargetSpec {
    var name: String
    var description: String?
    var inherits: [String] = []
    var context, dockerfile, dockerfileInline, target, network: String?
    var args: [String: String?]?
    var labels: [String: String?]?
    var contexts: [String: String]?
    var tags, platforms, cacheFrom, cacheTo, secrets, ssh, outputs, noCacheFilter, attest, annotations, entitlements: [String]?
    var noCache, pull: Bool?

    mutating func merge(_ o: TargetSpec) {
        if o.context != nil { context = o.context }
        if o.dockerfile != nil { dockerfile = o.dockerfile }
        if o.dockerfileInline != nil { dockerfileInline = o.dockerfileInline }
        // A null arg does not override an inherited one (buildx skips nil values).
        for (k, v) in o.args ?? [:] where v != nil { args = args ?? [:]; args![k] = v }
        for (k, v) in o.labels ?? [:] where v != nil { labels = labels ?? [:]; labels![k] = v }
        for (k, v) in o.contexts ?? [:] { contexts = contexts ?? [:]; contexts![k] = v }
        if o.tags != nil { tags = o.tags }
        if o.target != nil { target = o.target }
        if let a = o.annotations { annotations = (annotations ?? []) + a }
        if let a = o.attest { attest = (attest ?? []) + a }
        if let s = o.secrets { secrets = (secrets ?? []) + s }
        if let s = o.ssh { ssh = (ssh ?? []) + s }
        if o.platforms != nil { platforms = o.platforms }
        if let c = o.cacheFrom { cacheFrom = (cacheFrom ?? []) + c }
        if o.cacheTo != nil { cacheTo = o.cacheTo }
        if o.outputs != nil { outputs = o.outputs }
        if o.pull != nil { pull = o.pull }
        if o.noCache != nil { noCache = o.noCache }
        if o.network != nil { network = o.network }
        if let n = o.noCacheFilter { noCacheFilter = (noCacheFilter ?? []) + n }
        if let d = o.description, !d.isEmpty { description = d }
        if let e = o.entitlements { entitlements = (entitlements ?? []) + e }
        inherits += o.inherits
    }

    /// The resolved target: buildx's defaults (context ".", dockerfile "Dockerfile") and its
    /// normalization (duplicates and empty entries dropped; a secret, ssh id or attest type once,
    /// the last one winning; `network = "host"` needing the network.host entitlement).
    func resolved() -> BakeTarget {
        var t = BakeTarget(name: name)
        t.description = description.flatMap { $0.isEmpty ? nil : $0 }
        t.context = context ?? "."
        t.dockerfile = (dockerfile ?? "").isEmpty ? "Dockerfile" : dockerfile
        t.dockerfileInline = dockerfileInline
        t.args = (args ?? [:]).filter { $0.value != nil }
        t.labels = (labels ?? [:]).filter { $0.value != nil }
        t.contexts = (contexts ?? [:]).filter { !$0.value.isEmpty }
        t.tags = Self.dedupe(tags ?? [])
        t.target = target
        t.platforms = Self.dedupe(platforms ?? [])
        t.cacheFrom = Self.dedupe(cacheFrom ?? [])
        t.cacheTo = Self.dedupe(cacheTo ?? [])
        t.secrets = Self.lastByKey(secrets ?? []) { CSVEntry($0).value("id") ?? $0 }
        t.ssh = Self.lastByKey(ssh ?? []) { String($0.split(separator: "=", maxSplits: 1).first ?? "") }
        t.outputs = Self.dedupe(outputs ?? [])
        t.network = network
        t.noCache = noCache
        t.noCacheFilter = Self.dedupe(noCacheFilter ?? [])
        t.pull = pull
        t.attest = Self.lastByKey(attest ?? []) { CSVEntry($0).value("type") ?? $0 }
        t.annotations = Self.dedupe(annotations ?? [])
        t.entitlements = Self.dedupe((entitlements ?? []) + (network == "host" ? ["network.host"] : []))
        return t
    }

    static func dedupe(_ l: [String]) -> [String] {
        var seen = Set<String>()
        return l.filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    static func lastByKey(_ l: [String], _ key: (String) -> String) -> [String] {
        var out: [String] = []
        var at: [String: Int] = [:]
        for v in l where !v.isEmpty {
            let k = key(v)
            if let i = at[k] { out[i] = v } else { at[k] = out.count; out.append(v) }
        }
        return out
    }
}

/// `type=local,dest=out` split into its fields (no quoting: bake values rarely need it).
struct CSVEntry {
    var fields: [(String, String)] = []
    init(_ s: String) {
        for f in s.split(separator: ",") {
            if let eq = f.firstIndex(of: "=") {
                fields.append((String(f[..<eq]).lowercased(), String(f[f.index(after: eq)...])))
            } else {
                fields.append((String(f), ""))
            }
        }
    }
    func value(_ k: String) -> String? { fields.first { $0.0 == k }?.1 }
}
